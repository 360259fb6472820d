//! CSRF tokens of the console's forms: HMAC-SHA256, under a key drawn at
//! process start, of the signed-in user's name. A page from another site
//! cannot read a console page, so it cannot learn the token that a POST
//! must carry; the token needs no storage, and a restart of the worker
//! makes old forms fail (reload the page).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What separates console tokens from any other use of the key.
const PURPOSE: &[u8] = b"provisioner console form\0";

pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    /// A key from the operating system's random source.
    pub fn random() -> Self {
        CsrfKey(rand::random())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; 32 bytes is never refused.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(PURPOSE);
        mac
    }

    /// The token of `user`'s forms (hex).
    pub fn token(&self, user: &str) -> String {
        let mut mac = self.mac();
        mac.update(user.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `token` is `user`'s (compared in constant time).
    pub fn verify(&self, user: &str, token: &str) -> bool {
        let Ok(bytes) = hex::decode(token.trim()) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(user.as_bytes());
        mac.verify_slice(&bytes).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_valid_for_its_user_and_key_only() {
        let key = CsrfKey::random();
        let token = key.token("oncall");
        assert_eq!(token.len(), 64);
        assert!(key.verify("oncall", &token));
        assert!(!key.verify("other", &token));
        assert!(!key.verify("oncall", ""));
        assert!(!key.verify("oncall", "not hex"));
        assert!(!key.verify("oncall", &token[..62]));
        assert!(!CsrfKey::random().verify("oncall", &token));
    }
}
