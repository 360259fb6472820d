//! `provisioner demo` (being written).

use super::anyhow_free;

pub async fn demo() -> anyhow_free::Result {
    eprintln!("demo: being written");
    Ok(1)
}
