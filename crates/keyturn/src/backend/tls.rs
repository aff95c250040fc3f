//! The TLS client configuration every database connection uses: verify-full against the
//! system roots, Amazon RDS's CA bundle (embedded, so RDS works with nothing downloaded)
//! and any extra CA files the deployment names (self-managed databases, tests).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Amazon RDS's global CA bundle: the roots that sign RDS and Aurora server certificates.
pub const RDS_CA_BUNDLE: &[u8] = include_bytes!("../../certs/rds-global-bundle.pem");

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("CA file {path} holds no usable PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the client configuration once per container. `extra_ca_files` are PEM files
/// whose certificates are trusted in addition to the system's and RDS's roots.
pub fn client_config(extra_ca_files: &[PathBuf]) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    // A missing or partly unreadable system store is not fatal: RDS and extra CAs remain.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(RDS_CA_BUNDLE).flatten());
    for path in extra_ca_files {
        let added = add_pem_file(&mut roots, path)?;
        if added == 0 {
            return Err(TlsSetupError::NoCertificate { path: path.clone() });
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, TlsSetupError> {
    let pem = std::fs::read(path).map_err(|source| TlsSetupError::Read { path: path.to_owned(), source })?;
    let (added, _ignored) = roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).flatten());
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_rds_bundle_parses_whole() {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(RDS_CA_BUNDLE).collect::<Result<_, _>>().unwrap();
        assert_eq!(certs.len(), 102);
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(certs);
        assert_eq!((added, ignored), (102, 0));
    }

    #[test]
    fn every_certificate_of_a_bundle_file_is_trusted() {
        let dir = std::env::temp_dir().join(format!("keyturn-tls-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bundle = dir.join("bundle.pem");
        std::fs::write(&bundle, RDS_CA_BUNDLE).unwrap();
        let mut roots = RootCertStore::empty();
        assert_eq!(add_pem_file(&mut roots, &bundle).unwrap(), 102, "every certificate in the file");
        assert_eq!(roots.len(), 102);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("keyturn-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let err = client_config(std::slice::from_ref(&empty)).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let missing = dir.join("missing.pem");
        assert!(matches!(client_config(&[missing]), Err(TlsSetupError::Read { .. })));
    }
}
