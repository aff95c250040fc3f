//! A throwaway CA and a server certificate for the databases of one test run.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// PEM files written by [`generate`].
pub struct Pki {
    pub ca_cert: PathBuf,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

/// Creates a CA (written to `dir/ca.pem`) and a server certificate valid for `names` only.
pub fn generate(dir: &Path, names: &[&str]) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "keyturn test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);

    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut server = CertificateParams::new(names).expect("server params");
    server.distinguished_name.push(DnType::CommonName, "keyturn test server");
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = server.signed_by(&server_key, &issuer).expect("server certificate");

    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write ca.pem");
    Pki { ca_cert: ca_path, server_cert_pem: server_cert.pem(), server_key_pem: server_key.serialize_pem() }
}
