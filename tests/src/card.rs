//! Card files made for a test through the library.

use std::path::Path;

/// Makes a card file through the library: YubiKey defaults, the given
/// management key algorithm, and keys with self-signed certificates.
pub fn make_card(
    path: &Path,
    mgmt: piv_applet::AlgorithmId,
    keys: &[(piv_applet::Slot, piv_applet::AlgorithmId)],
) {
    use piv_applet::{Card, CardOptions, PinPolicy, TouchPolicy};
    let opts = CardOptions {
        mgmt_key_alg: mgmt,
        ..CardOptions::default()
    };
    let mut card = Card::create(path, &opts).expect("create card");
    for (slot, alg) in keys {
        card.generate_key(*slot, *alg, PinPolicy::Default, TouchPolicy::Default)
            .expect("generate");
        let subject = format!("CN=e2e {slot}");
        let req = piv_applet::x509::CertRequest {
            subject: &subject,
            serial: &[1, 2, 3],
            not_before: piv_applet::x509::valid_from_now(),
            days: 30,
            extensions: vec![],
        };
        card.self_sign(*slot, &req).expect("self-sign");
    }
}
