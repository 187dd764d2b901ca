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

/// A certificate for the public key in `public` (PEM), with `subject`,
/// issued by the CA made by [`self_signed_rsa`] (`ca_cert`, `ca_key`) and
/// valid one day, written to `out` (PEM): a CA-issued certificate for a key
/// the card generated.
pub fn issue(public: &str, subject: &str, ca_cert: &str, ca_key: &str, out: &str) {
    run_ok(
        "openssl",
        &[
            "x509",
            "-new",
            "-force_pubkey",
            public,
            "-subj",
            subject,
            "-CA",
            ca_cert,
            "-CAkey",
            ca_key,
            "-days",
            "1",
            "-out",
            out,
        ],
    );
}
