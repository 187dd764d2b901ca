//! `cfg(ossl300)` when the libcrypto that openssl-sys found is OpenSSL 3,
//! where legacy PKCS#12 ciphers (RC2) live in the "legacy" provider
//! (src/credentials.rs loads it when the default provider cannot open a
//! file).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ossl300)");
    println!("cargo::rerun-if-env-changed=DEP_OPENSSL_VERSION_NUMBER");
    if let Ok(v) = std::env::var("DEP_OPENSSL_VERSION_NUMBER") {
        let version = u64::from_str_radix(&v, 16).expect("DEP_OPENSSL_VERSION_NUMBER is hex");
        // OPENSSL_VERSION_NUMBER of 3.0.0 (0xMNN00PP0L since OpenSSL 3).
        if version >= 0x3000_0000 {
            println!("cargo::rustc-cfg=ossl300");
        }
    }
}
