//! Automatic mutual TLS as docs/protocol.md (section 4) and go-plugin define it: a fresh
//! self-signed certificate of our own (its own CA, "localhost", server and client auth), on the
//! curve of the host's certificate; TLS that requires a client certificate and trusts exactly
//! the host's (PLUGIN_CLIENT_CERT); ALPN "h2", which gRPC clients require.
//!
//! rustls' standard client-certificate verifier builds a chain to a trust anchor and refuses a
//! CA:TRUE certificate as an end entity, which is exactly what the host presents. "Trust exactly
//! this certificate" is a pinning verifier: the presented certificate must be byte for byte the
//! host's, and the handshake signature is checked with its key as usual.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SignatureAlgorithm,
};
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::{self, ring, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime,
};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    self, CertificateError, DigitallySignedStruct, DistinguishedName as RustlsName, ServerConfig,
    SignatureScheme,
};

/// The name both certificates carry and both sides check, whatever the address.
pub const SERVER_NAME: &str = "localhost";

// The named-curve OIDs (DER, with tag and length) of a certificate's EC public key.
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Our key's algorithm for the host's certificate: its curve where we can make it (P-256,
/// P-384), else P-384, the strongest curve every gRPC stack speaks.
pub fn algorithm_for(host_cert_der: &[u8]) -> &'static SignatureAlgorithm {
    let has = |oid: &[u8]| host_cert_der.windows(oid.len()).any(|w| w == oid);
    if has(OID_P256) && !has(OID_P384) {
        &rcgen::PKCS_ECDSA_P256_SHA256
    } else {
        &rcgen::PKCS_ECDSA_P384_SHA384
    }
}

/// The one certificate in PEM `pem`, as DER.
pub fn certificate_from_pem(pem: &str) -> Result<CertificateDer<'static>, String> {
    let certificates: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    match <[_; 1]>::try_from(certificates) {
        Ok([certificate]) => Ok(certificate),
        Err(found) => Err(format!("must hold one certificate, found {}", found.len())),
    }
}

/// A fresh self-signed certificate for "localhost" and its key (PKCS#8).
pub fn generate(
    algorithm: &'static SignatureAlgorithm,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let key = KeyPair::generate_for(algorithm).map_err(|e| format!("cannot make a key: {e}"))?;
    let mut params =
        CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(|e| e.to_string())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, SERVER_NAME);
    params.distinguished_name = name;
    // Its own CA: the host trusts it as a root.
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    // rcgen's default validity (1975 to 4096) covers any clock skew and any run time.
    let certificate = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((certificate.der().clone(), key_der))
}

/// Accepts exactly one client certificate.
#[derive(Debug)]
pub struct PinnedClient {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClient {
    pub fn new(pinned: CertificateDer<'static>) -> Self {
        PinnedClient {
            pinned,
            algorithms: ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for PinnedClient {
    fn root_hint_subjects(&self) -> &[RustlsName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server side: present `own`, require the client to present exactly `host`, ALPN h2.
pub fn server_config(
    own: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    host: CertificateDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(Arc::new(PinnedClient::new(host)))
        .with_single_cert(vec![own], key)
        .map_err(|e| format!("cannot use our certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_follows_the_host() {
        let (p256, _) = generate(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (p384, _) = generate(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(std::ptr::eq(
            algorithm_for(&p256),
            &rcgen::PKCS_ECDSA_P256_SHA256
        ));
        assert!(std::ptr::eq(
            algorithm_for(&p384),
            &rcgen::PKCS_ECDSA_P384_SHA384
        ));
        assert!(std::ptr::eq(
            algorithm_for(b"junk"),
            &rcgen::PKCS_ECDSA_P384_SHA384
        ));
    }

    #[test]
    fn pem_holds_exactly_one_certificate() {
        let (der, _) = generate(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let text = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der.as_ref())
        );
        assert_eq!(certificate_from_pem(&text).unwrap().as_ref(), der.as_ref());
        assert!(certificate_from_pem("").unwrap_err().contains("found 0"));
        assert!(certificate_from_pem(&text.repeat(2))
            .unwrap_err()
            .contains("found 2"));
    }

    #[test]
    fn only_the_pinned_certificate_passes() {
        let (host, _) = generate(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let (other, _) = generate(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let verifier = PinnedClient::new(host.clone());
        assert!(verifier
            .verify_client_cert(&host, &[], UnixTime::now())
            .is_ok());
        assert!(verifier
            .verify_client_cert(&other, &[], UnixTime::now())
            .is_err());
        let (own, key) = generate(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let config = server_config(own, key, host).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
