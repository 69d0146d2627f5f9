//! A self-signed certificate made at run time (rcgen), and the rustls configs of both ends
//! (ring, the one provider compiled in).
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

pub struct Certs {
    pub cert_pem: String,
    pub key_pem: String,
    pub server: Arc<ServerConfig>,
    pub client: ClientConfig,
}

impl Certs {
    /// A certificate for `names` (DNS names, or IP addresses as IP SANs).
    pub fn new(names: &[String]) -> Self {
        let certified = rcgen::generate_simple_self_signed(names.to_vec()).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let server = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key.into())
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            server: Arc::new(server),
            client,
        }
    }
}
