use super::*;

#[test]
fn qsh_follows_the_gluster_examples() {
    // seeds/002: "GET\n/v1/volumes\nstatus=1" and "POST\n/v1/volumes/gv1/start\n{"force": true}"
    let get = query_string_hash("GET", "/v1/volumes", Some("status=1"), None);
    assert_eq!(get, hex::encode(Sha256::digest(b"GET\n/v1/volumes\nstatus=1")));
    let post = query_string_hash("POST", "/v1/volumes/gv1/start", None, Some(br#"{"force": true}"#));
    assert_eq!(post, hex::encode(Sha256::digest(b"POST\n/v1/volumes/gv1/start\n{\"force\": true}")));
    let bare = query_string_hash("get", "/v1/volumes", Some(""), Some(b""));
    assert_eq!(bare, hex::encode(Sha256::digest(b"GET\n/v1/volumes")));
}
