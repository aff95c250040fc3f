//! A throwaway certificate chain for the databases of one test run, shaped like RDS's: a
//! root CA, an intermediate CA it signs, and a server certificate the intermediate signs.
//! Servers send the server certificate alone, as RDS does; clients trust a bundle file
//! holding the root and the intermediate, as RDS's `global-bundle.pem` does.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// PEM files and texts written by [`generate`].
pub struct Pki {
    /// What clients trust: the root and the intermediate CA, in one file.
    pub ca_bundle: PathBuf,
    /// The root CA alone (a server's own CA file, which it must not complete its chain from).
    pub root_cert: PathBuf,
    /// The server certificate alone, without the intermediate.
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

fn ca_params(name: &str, path_len: Option<u8>) -> CertificateParams {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, BasicConstraints::Constrained));
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca
}

/// Creates a root and an intermediate CA named after `label` (written to `dir/ca-bundle.pem`,
/// the root also to `dir/root-ca.pem`) and a server certificate valid for `names` only.
pub fn generate(dir: &Path, label: &str, names: &[&str]) -> Pki {
    let root = ca_params(&format!("{label} root CA"), None);
    let root_key = KeyPair::generate().expect("root key");
    let root_cert = root.self_signed(&root_key).expect("root certificate");
    let root_issuer = Issuer::new(root, root_key);

    let intermediate = ca_params(&format!("{label} intermediate CA"), Some(0));
    let intermediate_key = KeyPair::generate().expect("intermediate key");
    let intermediate_cert = intermediate.signed_by(&intermediate_key, &root_issuer).expect("intermediate certificate");
    let intermediate_issuer = Issuer::new(intermediate, intermediate_key);

    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut server = CertificateParams::new(names).expect("server params");
    server.distinguished_name.push(DnType::CommonName, format!("{label} server"));
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = server.signed_by(&server_key, &intermediate_issuer).expect("server certificate");

    std::fs::create_dir_all(dir).expect("create the PKI dir");
    let (ca_bundle, root_path) = (dir.join("ca-bundle.pem"), dir.join("root-ca.pem"));
    std::fs::write(&ca_bundle, format!("{}{}", root_cert.pem(), intermediate_cert.pem())).expect("write ca-bundle.pem");
    std::fs::write(&root_path, root_cert.pem()).expect("write root-ca.pem");
    Pki {
        ca_bundle,
        root_cert: root_path,
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    }
}
