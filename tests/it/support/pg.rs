//! A PostgreSQL schema of its own for one test (the machine's PostgreSQL on
//! 127.0.0.1:5432, trust auth, database `test`; `JOURNAL_TEST_POSTGRES_URL`
//! overrides), dropped at the end.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

pub fn base_url() -> String {
    std::env::var("JOURNAL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub struct Schema {
    name: String,
}

impl Schema {
    pub async fn create() -> Schema {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "it_journal_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut conn = sqlx::PgConnection::connect(&base_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {} ({e}); scripts/test.sh starts it",
                    base_url()
                )
            });
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        Schema { name }
    }

    /// The database URL with this schema first on the search path.
    pub fn url(&self) -> String {
        let mut url = url::Url::parse(&base_url()).unwrap();
        url.query_pairs_mut()
            .append_pair("options", &format!("-c search_path={}", self.name));
        url.to_string()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A blocking clean-up: Drop cannot await, and the runtime may be gone.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&base_url()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
