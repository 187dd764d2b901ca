//! Keys and certificates made outside the card with the `openssl` command
//! line, for the tests that import or check against them.

use crate::run::run_ok;

/// A new RSA-2048 key (unencrypted PEM at `key`) and a self-signed
/// certificate for it (PEM at `cert`, valid two days) with `subject`
/// (`/CN=...`): what a CA or an imported identity needs in a test.
pub fn self_signed_rsa(key: &str, cert: &str, subject: &str) {
    run_ok(
        "openssl",
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-subj",
            subject, "-days", "2",
        ],
    );
}
