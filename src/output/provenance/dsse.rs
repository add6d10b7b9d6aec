//! `--sign-key`: the provenance signed as a DSSE envelope
//! (<https://github.com/secure-systems-lab/dsse/blob/master/envelope.md>), the form in-toto,
//! Sigstore and securesystemslib verify. The key is an Ed25519 or ECDSA P-256 private key in
//! PKCS#8 PEM, read and checked before any conversion work; its bytes are zeroised once ring has
//! taken them, and never reach a message. A signature's `keyid` is the lowercase hex sha256 of
//! the public key's SubjectPublicKeyInfo DER (what `openssl pkey -pubout -outform DER` writes).
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use sha2::{Digest, Sha256};
use std::path::Path;
use zeroize::Zeroizing;

/// The payload type of an in-toto statement in an envelope.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The SubjectPublicKeyInfo DER of an Ed25519 key before its 32 bytes (RFC 8410).
const ED25519_SPKI_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The SubjectPublicKeyInfo DER of a P-256 key before its 65-byte uncompressed point
/// (RFC 5480: id-ecPublicKey, prime256v1).
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// How to make a key c2vm takes, for the refusals.
const HOW: &str = "--sign-key takes an Ed25519 or ECDSA P-256 private key in unencrypted PKCS#8 PEM (BEGIN PRIVATE KEY), as `openssl genpkey -algorithm ed25519 -out KEY` writes";

/// A private key to sign with; `Debug` shows its keyid only.
pub struct SigningKey {
    pair: Pair,
    keyid: String,
}

enum Pair {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.keyid)
    }
}

impl SigningKey {
    /// Read `--sign-key PATH`: one line naming the path (never the contents) if it is no key
    /// c2vm signs with.
    pub fn read(path: &Path) -> Result<SigningKey> {
        let text = Zeroizing::new(
            std::fs::read(path)
                .with_context(|| format!("reading the signing key {}", path.display()))?,
        );
        SigningKey::from_pem(&text).map_err(|why| anyhow!("--sign-key {}: {why}", path.display()))
    }

    /// A key from its PEM text; the error says what it is and how to get one c2vm takes.
    fn from_pem(text: &[u8]) -> Result<SigningKey> {
        let (label, body) = pem_block(text)?;
        match label.as_str() {
            "PRIVATE KEY" => {
                let der = Zeroizing::new(
                    BASE64
                        .decode(body.as_bytes())
                        .map_err(|_| anyhow!("its PEM body is not base64; {HOW}"))?,
                );
                SigningKey::from_pkcs8(&der)
            }
            "EC PRIVATE KEY" => bail!("a SEC1 EC key (BEGIN EC PRIVATE KEY); {HOW}: convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`"),
            "ENCRYPTED PRIVATE KEY" => bail!("an encrypted key; {HOW}: decrypt a copy with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8` and keep it private"),
            "PUBLIC KEY" => bail!("a public key; {HOW}"),
            other => bail!("a {other} key; {HOW}, or convert yours with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`"),
        }
    }

    fn from_pkcs8(der: &[u8]) -> Result<SigningKey> {
        // OpenSSL writes PKCS#8 v1 (no public key inside), which ring checks only this way.
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let keyid = keyid(ED25519_SPKI_PREFIX, pair.public_key().as_ref());
            return Ok(SigningKey {
                pair: Pair::Ed25519(pair),
                keyid,
            });
        }
        let rng = SystemRandom::new();
        match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng) {
            Ok(pair) => {
                let keyid = keyid(P256_SPKI_PREFIX, pair.public_key().as_ref());
                Ok(SigningKey {
                    pair: Pair::P256(pair),
                    keyid,
                })
            }
            Err(_) => bail!("a PKCS#8 key of another type (RSA, or a curve other than P-256); {HOW}, or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out KEY`"),
        }
    }

    /// Which key signed: the hex sha256 of its public key's SubjectPublicKeyInfo DER.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// Ed25519's signature, or ECDSA P-256 with SHA-256 as DER (what securesystemslib reads).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        Ok(match &self.pair {
            Pair::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Pair::P256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map_err(|_| anyhow!("signing the provenance with ECDSA P-256 failed"))?
                .as_ref()
                .to_vec(),
        })
    }
}

fn keyid(spki_prefix: &[u8], public: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(spki_prefix);
    hash.update(public);
    format!("{:x}", hash.finalize())
}

/// The first PEM block's label and base64 body. Headers (`Proc-Type: 4,ENCRYPTED`) mark
/// OpenSSL's old encrypted format.
fn pem_block(text: &[u8]) -> Result<(String, Zeroizing<String>)> {
    let text = std::str::from_utf8(text).map_err(|_| anyhow!("not a PEM file; {HOW}"))?;
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or_else(|| anyhow!("not a PEM file; {HOW}"))?
        .to_string();
    let mut body = Zeroizing::new(String::new());
    for line in lines.take_while(|l| !l.starts_with("-----END ")) {
        if line.contains(':') {
            bail!("an encrypted key; {HOW}: decrypt a copy with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8` and keep it private");
        }
        body.push_str(line);
    }
    Ok((label, body))
}

/// DSSE's pre-authentication encoding, what is signed:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    payload_type: &'a str,
    payload: String,
    signatures: Vec<Signature<'a>>,
}

#[derive(serde::Serialize)]
struct Signature<'a> {
    keyid: &'a str,
    sig: String,
}

/// The statement in a DSSE envelope signed with `key`, as pretty JSON.
pub fn envelope(statement: &[u8], key: &SigningKey) -> Result<String> {
    let sig = key.sign(&pae(PAYLOAD_TYPE, statement))?;
    let envelope = Envelope {
        payload_type: PAYLOAD_TYPE,
        payload: BASE64.encode(statement),
        signatures: vec![Signature {
            keyid: key.keyid(),
            sig: BASE64.encode(sig),
        }],
    };
    serde_json::to_string_pretty(&envelope).context("serialising the DSSE envelope")
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    /// A fresh key of `openssl genpkey ARGS`, and its public key as PEM.
    pub fn openssl_key(dir: &Path, name: &str, args: &[&str]) -> Option<(PathBuf, Vec<u8>)> {
        let key = dir.join(name);
        let made = Command::new("openssl")
            .arg("genpkey")
            .args(args)
            .arg("-out")
            .arg(&key)
            .output();
        match made {
            Ok(out) if out.status.success() => {}
            _ => {
                eprintln!("openssl genpkey {args:?} failed or is missing: that key is not tested");
                return None;
            }
        }
        let public = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(public.status.success());
        Some((key, public.stdout))
    }

    #[test]
    fn pae_is_the_specs_encoding() {
        // The DSSE spec's test vector (protocol.md).
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }

    #[test]
    fn keyid_is_the_sha256_of_the_public_keys_spki() {
        let dir = tempfile::tempdir().unwrap();
        let kinds: [(&str, &[&str]); 2] = [
            ("ed.pem", &["-algorithm", "ed25519"]),
            (
                "p256.pem",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
        ];
        for (name, args) in kinds {
            let Some((path, _)) = openssl_key(dir.path(), name, args) else {
                continue;
            };
            let der = Command::new("openssl")
                .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                .arg(&path)
                .output()
                .unwrap();
            let key = SigningKey::read(&path).unwrap();
            assert_eq!(key.keyid(), format!("{:x}", Sha256::digest(&der.stdout)));
        }
    }

    /// The refusal of a key file, as the user sees it.
    fn refusal(dir: &Path, pem: &str) -> String {
        let path = dir.join("key.pem");
        std::fs::write(&path, pem).unwrap();
        let err = SigningKey::read(&path).unwrap_err().to_string();
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(err.starts_with(&format!("--sign-key {}: ", path.display())));
        err
    }

    #[test]
    fn other_keys_are_refused_in_one_line_saying_how_to_convert() {
        let dir = tempfile::tempdir().unwrap();
        let body = "MHcCAQEEIBSECRETSECRETSECRETSECRETSECRETSECRETSECRETSEoAoGCCqGSM49";
        let sec1 =
            format!("-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----\n");
        let err = refusal(dir.path(), &sec1);
        assert!(err.contains("SEC1") && err.contains("openssl pkcs8 -topk8 -nocrypt"));
        assert!(!err.contains("SECRET"), "the key's text never shows: {err}");
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(refusal(dir.path(), enc).contains("encrypted key"));
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nMIIB\n-----END RSA PRIVATE KEY-----\n";
        assert!(refusal(dir.path(), rsa).contains("encrypted key"));
        let ssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(refusal(dir.path(), ssh).contains("a OPENSSH PRIVATE KEY key"));
        assert!(refusal(dir.path(), "hunter2\n").contains("not a PEM file"));
        // A PKCS#8 key of another type: X25519 has the same shape as Ed25519 but is no signer.
        if let Some((path, _)) = openssl_key(dir.path(), "x.pem", &["-algorithm", "x25519"]) {
            let err = SigningKey::read(&path).unwrap_err().to_string();
            assert!(err.contains("another type"), "{err}");
        }
    }

    /// securesystemslib's check of an envelope: 0 verified, 1 refused, 3 not installed.
    const VERIFY: &str = "import json, sys
try:
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
except ImportError:
    sys.exit(3)
args = json.load(sys.stdin)
key = SSlibKey.from_crypto(load_pem_public_key(args['public'].encode()), keyid=args['keyid'])
try:
    Envelope.from_dict(args['envelope']).verify([key], 1)
except Exception as e:
    print(type(e).__name__, e)
    sys.exit(1)
";

    /// Run [`VERIFY`]; None where securesystemslib is not there.
    fn securesystemslib_verifies(
        python: &Path,
        envelope: &str,
        public: &[u8],
        keyid: &str,
    ) -> Option<bool> {
        use std::io::Write;
        let args = serde_json::json!({
            "envelope": serde_json::from_str::<serde_json::Value>(envelope).unwrap(),
            "public": String::from_utf8(public.to_vec()).unwrap(),
            "keyid": keyid,
        });
        let mut child = Command::new(python)
            .args(["-c", VERIFY])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(args.to_string().as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => Some(true),
            Some(1) => {
                eprintln!("securesystemslib: {}", String::from_utf8_lossy(&out.stdout));
                Some(false)
            }
            _ => None,
        }
    }

    /// Envelopes signed with an Ed25519 and a P-256 key from `openssl genpkey` pass
    /// securesystemslib's DSSE verification (scripts/install-sbom-tools, in `C2VM_SBOM_TOOLS`,
    /// where they must; else skipped), and one changed byte of the payload fails it.
    #[test]
    fn envelopes_pass_securesystemslib_and_a_changed_byte_does_not() {
        let (python, required) = crate::output::checker("python3");
        let dir = tempfile::tempdir().unwrap();
        let statement = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[]}"#;
        let kinds: [(&str, &[&str]); 2] = [
            ("ed.pem", &["-algorithm", "ed25519"]),
            (
                "p256.pem",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
        ];
        for (name, args) in kinds {
            let Some((path, public)) = openssl_key(dir.path(), name, args) else {
                assert!(
                    !required,
                    "openssl genpkey is needed to test the signatures"
                );
                continue;
            };
            let key = SigningKey::read(&path).unwrap();
            let signed = envelope(statement, &key).unwrap();
            let Some(verified) = securesystemslib_verifies(&python, &signed, &public, key.keyid())
            else {
                match required {
                    true => panic!("securesystemslib is not in C2VM_SBOM_TOOLS"),
                    false => {
                        eprintln!(
                            "securesystemslib is not installed: the envelopes are not verified"
                        );
                        return;
                    }
                }
            };
            assert!(verified, "{name}: {signed}");
            let mut changed = statement.to_vec();
            changed[10] ^= 1;
            let mut doc: serde_json::Value = serde_json::from_str(&signed).unwrap();
            doc["payload"] = BASE64.encode(&changed).into();
            let tampered =
                securesystemslib_verifies(&python, &doc.to_string(), &public, key.keyid());
            assert_eq!(
                tampered,
                Some(false),
                "{name}: a changed payload is refused"
            );
        }
    }
}
