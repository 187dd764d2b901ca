//! The shim <-> `vreader --listen` link: vpcd frames inside TLS 1.3, each
//! side pinned to the other's certificate.
//!
//! vpcd itself has no authentication and no encryption: whoever binds the
//! port first gets the PIN and everything else sent to the card. So this
//! link (and only this one: the vpcd link between vreader and pcscd stays
//! as the vpcd driver defines it) runs inside TLS 1.3 with mutual
//! authentication. There is no CA: `vreader pair` makes one self-signed
//! P-256 certificate for each side and writes two files, each holding its
//! side's private key, its side's certificate and the peer's certificate.
//! A peer is accepted only if it presents exactly the pinned certificate
//! (whole DER, no chain) and proves in the handshake that it holds its key
//! (the handshake signature is still verified, by rustls' provider).
//! Names and dates are not checked: the pin is the whole trust decision,
//! and re-pairing is how a key is replaced.
//!
//! TLS 1.2 and session resumption are off: one kind of handshake to
//! reason about, and no tickets that would outlive a re-pairing.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use zeroize::Zeroizing;

/// The shim's credentials file, in [`default_dir`].
pub const SHIM_FILE: &str = "shim.pem";
/// `vreader --listen`'s credentials file, in [`default_dir`].
pub const VREADER_FILE: &str = "vreader.pem";

/// How long a TLS handshake may take before the peer counts as refused.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `vreader pair` writes both files and where each side looks for
/// its own by default: `$XDG_DATA_HOME/virtual-piv/link` (else
/// `~/.local/share/virtual-piv/link`); on Windows
/// `%LOCALAPPDATA%\virtual-piv\link`.
pub fn default_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|d| !d.is_empty());
    let base = if cfg!(windows) {
        var("LOCALAPPDATA").map(PathBuf::from)
    } else {
        var("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".local/share")))
    };
    base.unwrap_or_else(|| PathBuf::from("."))
        .join("virtual-piv")
        .join("link")
}

/// One side's view of a pairing.
pub struct Credentials {
    key: PrivatePkcs8KeyDer<'static>,
    own: CertificateDer<'static>,
    peer: CertificateDer<'static>,
}

impl Credentials {
    /// Reads a credentials file; errors name the file.
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            format!(
                "{}: cannot read the link credentials ({e}); `vreader pair` writes them",
                path.display()
            )
        })?);
        Credentials::from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the file format: PEM blocks `PRIVATE KEY` (this side's,
    /// PKCS#8), `CERTIFICATE` (this side's), `CERTIFICATE` (the peer's),
    /// in this order; text outside the blocks is ignored (RFC 7468).
    pub fn from_pem(text: &str) -> Result<Credentials, String> {
        let blocks = pem_blocks(text)?;
        let labels: Vec<&str> = blocks.iter().map(|(l, _)| l.as_str()).collect();
        if labels != ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"] {
            return Err(format!(
                "expected the PEM blocks PRIVATE KEY, CERTIFICATE (own), CERTIFICATE (peer), found {labels:?}"
            ));
        }
        let mut it = blocks.into_iter().map(|(_, der)| der);
        let key = PrivatePkcs8KeyDer::from(it.next().expect("checked").to_vec());
        let own = CertificateDer::from(it.next().expect("checked").to_vec());
        let peer = CertificateDer::from(it.next().expect("checked").to_vec());
        let creds = Credentials { key, own, peer };
        // Builds both configurations once, so a bad key or certificate is
        // reported when the file is read, not at the first handshake.
        creds.client_config()?;
        Ok(creds)
    }

    /// The shim's side: presents its certificate, accepts only the pinned
    /// vreader.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Pinned::new(&self.peer, &provider, "vreader"));
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.own.clone()], self.key())
            .map_err(|e| format!("bad own key or certificate: {e}"))?;
        config.resumption = rustls::client::Resumption::disabled();
        config.enable_sni = false;
        Ok(Arc::new(config))
    }

    /// vreader's side: requires a client certificate, accepts only the
    /// pinned shim.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Pinned::new(&self.peer, &provider, "shim"));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.own.clone()], self.key())
            .map_err(|e| format!("bad own key or certificate: {e}"))?;
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Arc::new(config))
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// A PEM block: label and DER.
type PemBlock = (String, Zeroizing<Vec<u8>>);

fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, String> {
    use base64ct::Encoding;
    let mut blocks = Vec::new();
    let mut open: Option<(String, Zeroizing<String>)> = None;
    for line in text.lines().map(str::trim) {
        let marker = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|l| l.strip_suffix("-----"))
                .map(str::to_string)
        };
        if let Some(label) = marker("-----BEGIN ") {
            if open.is_some() {
                return Err(format!("PEM block {label:?} starts inside another"));
            }
            open = Some((label, Zeroizing::new(String::new())));
        } else if let Some(label) = marker("-----END ") {
            let (begun, body) = open
                .take()
                .ok_or_else(|| format!("PEM END {label:?} without BEGIN"))?;
            if begun != label {
                return Err(format!("PEM block {begun:?} ends as {label:?}"));
            }
            let der = base64ct::Base64::decode_vec(&body)
                .map_err(|_| format!("PEM block {label:?} is not valid base64"))?;
            blocks.push((label, Zeroizing::new(der)));
        } else if let Some((_, body)) = open.as_mut() {
            body.push_str(line);
        }
    }
    match open {
        Some((label, _)) => Err(format!("PEM block {label:?} has no END line")),
        None => Ok(blocks),
    }
}

/// Makes a new pairing: `(shim file, vreader file)` in the format
/// [`Credentials::from_pem`] reads. Each side gets a fresh P-256 key (what
/// ring signs and verifies on every platform the shim builds for).
pub fn generate_pair() -> Result<(Zeroizing<String>, Zeroizing<String>), String> {
    let (shim_key, shim_cert) = identity("CN=virtual-piv shim")?;
    let (vreader_key, vreader_cert) = identity("CN=virtual-piv vreader")?;
    let file = |who: &str, peer: &str, key: &[u8], own: &[u8], pinned: &[u8]| {
        let pem = |label, der| {
            der::pem::encode_string(label, der::pem::LineEnding::LF, der).expect("PEM encoding")
        };
        Zeroizing::new(format!(
            "virtual-piv link credentials of the {who}, written by `vreader pair`.\n\
             SECRET: the private key lets its holder pass for the {who}.\n\
             Blocks: the {who}'s key, the {who}'s certificate, the pinned {peer} certificate.\n\n\
             {}{}{}",
            *Zeroizing::new(pem("PRIVATE KEY", key)),
            pem("CERTIFICATE", own),
            pem("CERTIFICATE", pinned)
        ))
    };
    Ok((
        file("shim", "vreader", &shim_key, &shim_cert, &vreader_cert),
        file("vreader", "shim", &vreader_key, &vreader_cert, &shim_cert),
    ))
}

/// A fresh key (PKCS#8) and a self-signed certificate for it.
fn identity(subject: &str) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), String> {
    use p256::pkcs8::EncodePrivateKey;
    use rand_core::RngCore;
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    let pkcs8 = Zeroizing::new(
        key.to_pkcs8_der()
            .map_err(|e| e.to_string())?
            .as_bytes()
            .to_vec(),
    );
    let mut serial = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut serial);
    let req = piv_applet::x509::CertRequest {
        subject,
        serial: &serial,
        not_before: piv_applet::x509::valid_from_now(),
        // Dates are not checked (see the module comment); a long validity
        // keeps other tools that look at the file from complaining.
        days: 100 * 365,
        extensions: vec![],
    };
    let cert = piv_applet::x509::self_signed(&piv_applet::keys::KeyMaterial::from(key), &req)
        .map_err(|e| e.to_string())?;
    Ok((pkcs8, cert))
}

/// Accepts exactly one certificate, in both directions.
#[derive(Debug)]
struct Pinned {
    peer: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
    /// Who the peer should be, for the refusal message.
    role: &'static str,
}

/// Its Debug is its message: rustls prints the inner error with `{:?}`.
struct NotPaired(&'static str);

impl std::fmt::Debug for NotPaired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for NotPaired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not the paired {} certificate (see `vreader pair`)",
            self.0
        )
    }
}

impl std::error::Error for NotPaired {}

impl Pinned {
    fn new(
        peer: &CertificateDer<'static>,
        provider: &rustls::crypto::CryptoProvider,
        role: &'static str,
    ) -> Pinned {
        Pinned {
            peer: peer.clone(),
            algorithms: provider.signature_verification_algorithms,
            role,
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if intermediates.is_empty() && end_entity.as_ref() == self.peer.as_ref() {
            return Ok(());
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(NotPaired(self.role)))),
        ))
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The certificate given here is the one `check` accepted: the
        // signature proves the peer holds the pinned key.
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

/// TLS 1.2 is not offered, so its signatures are never asked for.
fn no_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::General(
        "TLS 1.2 is not offered on this link".into(),
    ))
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The shim's end of an established link.
pub type ClientStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;
/// vreader's end of an established link.
pub type ServerStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// A failed handshake: the peer is refused, and the error says why.
fn refused(e: io::Error) -> io::Error {
    let why = match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    };
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refused: TLS handshake failed: {why}"),
    )
}

/// Runs a handshake to its end (or `timeout`) over a blocking socket with
/// a read timeout. Written once per side: rustls' generic connection type
/// does not expose `complete_io` to generic code.
macro_rules! handshake {
    ($conn:expr, $sock:expr, $timeout:expr) => {{
        let deadline = Instant::now() + $timeout;
        let mut result = Ok(());
        while $conn.is_handshaking() {
            match $conn.complete_io($sock) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) && Instant::now() < deadline => {}
                Err(e) => {
                    result = Err(refused(e));
                    break;
                }
            }
        }
        result
    }};
}

/// The shim's side: a TLS handshake on a connected socket. Nothing but the
/// handshake is sent until the peer has shown the pinned certificate.
pub fn connect(
    mut sock: TcpStream,
    config: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> io::Result<ClientStream> {
    let name = ServerName::try_from("vreader").expect("a valid DNS name");
    let mut conn = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    handshake!(conn, &mut sock, timeout)?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// vreader's side: a TLS handshake on an accepted socket (whose timeouts
/// the caller has set); a peer without the pinned certificate is refused.
pub fn accept(
    mut sock: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    timeout: Duration,
) -> io::Result<ServerStream> {
    let mut conn = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    handshake!(conn, &mut sock, timeout)?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// Whether the peer has closed an established link, without blocking: TLS
/// records that arrived meanwhile (a close_notify alert, then the end of
/// the stream) are read, so a peek at the socket would not do.
pub fn peer_closed(stream: &mut ClientStream) -> bool {
    if stream.sock.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = loop {
        match stream.conn.read_tls(&mut stream.sock) {
            Ok(0) => break true,
            Ok(_) => match stream.conn.process_new_packets() {
                Ok(state) if state.peer_has_closed() => break true,
                Ok(_) => continue,
                Err(_) => break true,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    closed | stream.sock.set_nonblocking(false).is_err()
}

/// Reads one vpcd frame from a TLS stream (the reader's side: a reply).
pub fn read_frame(
    stream: &mut impl Read,
    decoder: &mut vpcd::FrameDecoder,
) -> io::Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
    // Wiped on return: reads bring PINs and decrypted data.
    let mut buf = zeroize::Zeroizing::new([0u8; 4096]);
    loop {
        if let Some(frame) = decoder.next_frame() {
            return Ok(Some(frame));
        }
        let n = stream.read(&mut buf[..])?;
        if n == 0 {
            return Ok(None);
        }
        decoder.push(&buf[..n]);
    }
}

/// Writes one vpcd frame and sends it.
pub fn write_frame(stream: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let frame = vpcd::encode_frame(payload)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    stream.write_all(&frame)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_load_and_bad_files_are_named() {
        let (shim, vreader) = generate_pair().unwrap();
        assert!(Credentials::from_pem(&shim).is_ok());
        let v = Credentials::from_pem(&vreader).unwrap();
        v.server_config().unwrap();
        let e =
            Credentials::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .err()
                .unwrap();
        assert!(e.contains("PRIVATE KEY"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.pem");
        let e = Credentials::load(&path).err().unwrap();
        assert!(
            e.contains("missing.pem") && e.contains("vreader pair"),
            "{e}"
        );
    }
}
