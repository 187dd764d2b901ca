//! Making cards that are useful at once.

use std::path::Path;

use piv_applet::x509::CertRequest;
use piv_applet::{AlgorithmId, Card, CardOptions, Passphrase, PinPolicy, Slot, TouchPolicy};

/// Creates a card file with YubiKey defaults plus, when `demo_key` is set,
/// an RSA-2048 key and a self-signed certificate in slot 9A, so OpenSC and
/// ssh have something to show and use right away.
pub fn create_card(
    path: &Path,
    opts: &CardOptions,
    demo_key: bool,
    passphrase: Option<&Passphrase>,
) -> anyhow::Result<Card> {
    let mut card = Card::create_with(path, opts, passphrase)?;
    if demo_key {
        card.generate_key(
            Slot::AUTHENTICATION,
            AlgorithmId::Rsa2048,
            PinPolicy::Default,
            TouchPolicy::Default,
        )?;
        let serial = card.state().identity.serial;
        let subject = format!("CN=Virtual PIV {serial},O=virtual-piv");
        let req = CertRequest {
            subject: &subject,
            serial: &serial.to_be_bytes(),
            not_before: piv_applet::x509::valid_from_now(),
            days: 3650,
            extensions: vec![],
        };
        card.self_sign(Slot::AUTHENTICATION, &req)?;
    }
    Ok(card)
}

/// A human-readable account of a card file: never a secret.
pub fn describe(card: &Card) -> String {
    use std::fmt::Write;
    let s = card.state();
    let id = &s.identity;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "card file:       {}",
        card.path()
            .map_or("(memory)".into(), |p| p.display().to_string())
    );
    if card.path().is_some() {
        let _ = writeln!(
            out,
            "encryption:      {}",
            if card.is_sealed() {
                "passphrase (Argon2id + XChaCha20-Poly1305)"
            } else {
                "none (keys and PIN in clear, file mode 0600)"
            }
        );
    }
    let _ = writeln!(out, "serial:          {}", id.serial);
    let _ = writeln!(
        out,
        "firmware:        {}.{}.{}",
        id.firmware[0], id.firmware[1], id.firmware[2]
    );
    let _ = writeln!(out, "ATR:             {}", hex::encode_upper(&id.atr));
    let _ = writeln!(out, "CHUID GUID:      {}", hex::encode(id.guid));
    let _ = writeln!(
        out,
        "PIN:             {} of {} tries left{}",
        s.pin.tries_left,
        s.pin.max_tries,
        if s.pin.is_default(piv_applet::state::DEFAULT_PIN) {
            " (default PIN)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "PUK:             {} of {} tries left{}",
        s.puk.tries_left,
        s.puk.max_tries,
        if s.puk.is_default(piv_applet::state::DEFAULT_PUK) {
            " (default PUK)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "secure messaging: {}",
        match &s.secure_messaging {
            None => "off".to_string(),
            Some(sm) => format!(
                "{}{}{}",
                sm.suite().name(),
                if sm.contactless {
                    ", contactless profile (virtual contact interface)"
                } else {
                    ""
                },
                match (sm.contactless, sm.pairing_code.is_some()) {
                    (_, true) => ", pairing code set",
                    (true, false) => ", no pairing code",
                    (false, false) => "",
                }
            ),
        }
    );
    let _ = writeln!(
        out,
        "management key:  {}{}",
        s.mgmt.algorithm().name().unwrap_or("?"),
        if s.mgmt.is_default() {
            " (default key)"
        } else {
            ""
        }
    );
    for (slot, ks) in &s.keys {
        let cert = card
            .certificate(*slot)
            .map(|der| format!("certificate {} bytes", der.len()))
            .unwrap_or_else(|| "no certificate".into());
        let _ = writeln!(
            out,
            "slot {slot}:         {} key, {:?} origin, PIN policy {:?}, touch policy {:?}, {cert}",
            ks.key.algorithm().name().unwrap_or("?"),
            ks.origin,
            ks.pin_policy,
            ks.touch_policy,
        );
    }
    let objects: Vec<String> = s.objects.keys().map(|o| o.to_string()).collect();
    let _ = writeln!(out, "data objects:    {}", objects.join(" "));
    out
}

/// A content signer made for one card when the user brings none: a key on
/// the suite's curve and a certificate naming the card's serial, issued by
/// `issuer` (a CA's key and certificate) or else self-signed. The key
/// signs the card's CVC once and is then dropped; the certificate stays on
/// the card (Secure Messaging Certificate Signer).
pub fn content_signer(
    suite: piv_applet::sm::CipherSuite,
    serial: u32,
    issuer: Option<&(piv_applet::keys::KeyMaterial, Vec<u8>)>,
) -> anyhow::Result<(piv_applet::keys::KeyMaterial, Vec<u8>)> {
    use piv_applet::x509;
    let key = piv_applet::keys::KeyMaterial::generate(suite.key_algorithm())?;
    let subject = format!("CN=Virtual PIV secure messaging signer,serialNumber={serial}");
    let mut serial_number = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial_number);
    let req = x509::CertRequest {
        subject: &subject,
        serial: &serial_number,
        not_before: x509::valid_from_now(),
        days: 3650,
        extensions: vec![x509::basic_constraints(issuer.is_none())?],
    };
    let cert = match issuer {
        Some((ca_key, ca_cert)) => x509::issue(ca_key, ca_cert, &key.public_key_spki_der(), &req)?,
        None => x509::self_signed(&key, &req)?,
    };
    Ok((key, cert))
}
