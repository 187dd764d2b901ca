//! Which reader slot (TCP endpoint) each card of `vreader run` plugs into.
//!
//! vpcd numbers its reader slots by port: slot N of a pcscd is port
//! 35963 + N. Cards given without an address take consecutive slots, so
//! `--card a --card b` fills both readers of a stock pcscd. Resolving every
//! address before anything starts lets a typo fail the whole command at
//! once instead of leaving half the cards running.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::host::Endpoint;

/// Where cards go when no per-card address is given.
#[derive(Clone, Debug)]
pub enum Base {
    /// Dial vpcd at this host; slot N is `port + N`.
    Connect { host: String, port: u16 },
    /// Wait for readers on this address; slot N is `port + N`.
    Listen(SocketAddr),
}

impl Base {
    /// The stock pcscd with vsmartcard-vpcd on this machine.
    pub fn local_vpcd() -> Base {
        Base::Connect {
            host: "127.0.0.1".into(),
            port: vpcd::DEFAULT_PORT,
        }
    }

    /// Whether slots are the readers of this machine's pcscd, whose names
    /// `vpcd::names::reader_name` knows.
    pub fn is_local_vpcd(&self) -> bool {
        matches!(self, Base::Connect { host, port } if host == "127.0.0.1" && *port == vpcd::DEFAULT_PORT)
    }

    /// Parses `--connect HOST:PORT` (HOST may be a name or `[v6]`).
    pub fn connect(addr: &str) -> Result<Base, String> {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("--connect {addr}: expected HOST:PORT"))?;
        let port = port
            .parse()
            .map_err(|_| format!("--connect {addr}: {port} is not a port number"))?;
        if host.is_empty() {
            return Err(format!("--connect {addr}: the host is missing"));
        }
        Ok(Base::Connect {
            host: host.to_string(),
            port,
        })
    }

    fn at(&self, offset: u32) -> Result<Endpoint, String> {
        let port = |base: u16| {
            u16::try_from(u32::from(base) + offset)
                .map_err(|_| format!("slot {offset} past port {base} is beyond port 65535"))
        };
        Ok(match self {
            Base::Connect { host, port: p } => Endpoint::Connect(format!("{host}:{}", port(*p)?)),
            Base::Listen(a) => Endpoint::Listen(SocketAddr::new(a.ip(), port(a.port())?)),
        })
    }
}

/// One `--card` argument after resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub file: String,
    pub endpoint: Endpoint,
    /// The slot number, unless the card was given an address of its own.
    pub slot: Option<u32>,
}

/// Resolves `--card` arguments: `FILE@N` goes to slot N, `FILE@HOST:PORT`
/// exactly there, and a plain `FILE` to the next slot from `first_slot` on
/// that no other card names. Two cards on one address are refused: the
/// second would silently wait behind the first in vpcd's accept queue.
pub fn place(
    specs: &[String],
    base: &Base,
    first_slot: u16,
    allow_remote: bool,
) -> Result<Vec<Placement>, String> {
    let mut explicit: Vec<Option<(&str, Endpoint, Option<u32>)>> = Vec::new();
    for spec in specs {
        explicit.push(match spec.rsplit_once('@') {
            Some((file, slot)) if !file.is_empty() && slot.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u32 = slot
                    .parse()
                    .map_err(|_| format!("--card {spec}: bad slot number {slot}"))?;
                Some((file, base.at(n)?, Some(n)))
            }
            Some((file, addr)) if !file.is_empty() && addr.contains(':') => {
                let endpoint = match base {
                    Base::Connect { .. } => Endpoint::Connect(addr.to_string()),
                    Base::Listen(_) => Endpoint::Listen(addr.parse().map_err(|_| {
                        format!("--card {spec}: {addr} is not an IP address and port to listen on")
                    })?),
                };
                Some((file, endpoint, None))
            }
            _ => None,
        });
    }
    let taken: Vec<Endpoint> = explicit
        .iter()
        .flatten()
        .map(|(_, e, _)| e.clone())
        .collect();
    let mut out: Vec<Placement> = Vec::new();
    let mut next = u32::from(first_slot);
    for (spec, fixed) in specs.iter().zip(explicit) {
        let (file, endpoint, slot) = match fixed {
            Some(x) => x,
            None => loop {
                let endpoint = base.at(next)?;
                next += 1;
                if !taken.contains(&endpoint) {
                    break (spec.as_str(), endpoint, Some(next - 1));
                }
            },
        };
        if let Endpoint::Listen(a) = &endpoint {
            if !is_loopback(a.ip()) && !allow_remote {
                return Err(format!(
                    "--listen {a} is not a loopback address; add --allow-remote to accept readers from the network"
                ));
            }
        }
        if let Some(other) = out.iter().find(|p| p.endpoint == endpoint) {
            return Err(format!(
                "cards {} and {file} both want {endpoint}: one card per reader slot",
                other.file
            ));
        }
        out.push(Placement {
            file: file.to_string(),
            endpoint,
            slot,
        });
    }
    Ok(out)
}

/// The card files of `vreader run --cards DIR`: every `*.json` file in
/// the directory, in byte order of their names, so a card keeps its slot
/// from one run to the next as long as no file sorts before it. Hidden
/// files and the store's lock and temporary files are not cards.
pub fn card_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("--cards {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("--cards {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let path = entry.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "--cards {}: no card files (*.json) in the directory",
            dir.display()
        ));
    }
    Ok(files)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        // ::ffff:127.0.0.1 is loopback too.
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn endpoints(p: &[Placement]) -> Vec<String> {
        p.iter().map(|p| p.endpoint.to_string()).collect()
    }

    #[test]
    fn cards_fill_consecutive_slots() {
        let p = place(&files(&["a", "b"]), &Base::local_vpcd(), 0, false).unwrap();
        assert_eq!(
            endpoints(&p),
            ["connect 127.0.0.1:35963", "connect 127.0.0.1:35964"]
        );
        assert_eq!(p[1].file, "b");
        assert_eq!(p[1].slot, Some(1));
        let p = place(&files(&["a"]), &Base::local_vpcd(), 1, false).unwrap();
        assert_eq!(endpoints(&p), ["connect 127.0.0.1:35964"]);
    }

    #[test]
    fn explicit_slots_and_addresses() {
        let base = Base::connect("vpcd.example:40000").unwrap();
        let p = place(
            &files(&["a@1", "dir@x/b.json@127.0.0.1:9", "c"]),
            &base,
            0,
            false,
        )
        .unwrap();
        assert_eq!(
            endpoints(&p),
            [
                "connect vpcd.example:40001",
                "connect 127.0.0.1:9",
                "connect vpcd.example:40000"
            ]
        );
        assert_eq!(p[1].file, "dir@x/b.json");
        assert_eq!(
            p.iter().map(|p| p.slot).collect::<Vec<_>>(),
            [Some(1), None, Some(0)]
        );
        // A file name with an @ but no slot after it stays a file name.
        let p = place(&files(&["me@home.json"]), &Base::local_vpcd(), 0, false).unwrap();
        assert_eq!(p[0].file, "me@home.json");
    }

    #[test]
    fn listen_mode_is_loopback_unless_allowed() {
        let base = Base::Listen("127.0.0.1:35990".parse().unwrap());
        let p = place(&files(&["a", "b@5"]), &base, 0, false).unwrap();
        assert_eq!(
            endpoints(&p),
            ["listen 127.0.0.1:35990", "listen 127.0.0.1:35995"]
        );
        let remote = Base::Listen("0.0.0.0:35990".parse().unwrap());
        let e = place(&files(&["a"]), &remote, 0, false).unwrap_err();
        assert!(e.contains("--allow-remote"), "{e}");
        assert!(place(&files(&["a"]), &remote, 0, true).is_ok());
        let e = place(&files(&["a@10.0.0.1:1"]), &base, 0, false).unwrap_err();
        assert!(e.contains("--allow-remote"), "{e}");
        assert!(place(&files(&["a@[::1]:1"]), &base, 0, false).is_ok());
    }

    #[test]
    fn plain_cards_skip_named_slots() {
        let p = place(&files(&["a", "b@0", "c"]), &Base::local_vpcd(), 0, false).unwrap();
        assert_eq!(
            endpoints(&p),
            [
                "connect 127.0.0.1:35964",
                "connect 127.0.0.1:35963",
                "connect 127.0.0.1:35965"
            ]
        );
    }

    #[test]
    fn card_directory_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.json",
            "a.json",
            "a.json.lock",
            "c.json.tmp-12",
            ".hidden.json",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"{}").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.json")).unwrap();
        let files = card_files(dir.path()).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap()).collect();
        assert_eq!(names, ["a.json", "b.json"]);
        let empty = tempfile::tempdir().unwrap();
        let e = card_files(empty.path()).unwrap_err();
        assert!(e.contains("no card files"), "{e}");
        let e = card_files(&dir.path().join("nope")).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn refusals() {
        let e = place(&files(&["a@0", "b@0"]), &Base::local_vpcd(), 0, false).unwrap_err();
        assert!(e.contains("one card per reader slot"), "{e}");
        assert!(place(&files(&["a@99999"]), &Base::local_vpcd(), 0, false).is_err());
        assert!(place(&files(&["a"]), &Base::local_vpcd(), 40000, false).is_err());
        assert!(Base::connect("nohost").is_err());
        assert!(Base::connect(":1").is_err());
        assert!(Base::connect("h:port").is_err());
    }
}
