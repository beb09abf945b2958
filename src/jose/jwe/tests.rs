//! Tests of the public JWE API: published vectors (RFC 7520 section 5,
//! RFC 7516 appendix A.3), tokens from an independent implementation
//! (jwcrypto, see scripts/gen_jwe_vectors.py), and tampering with every compact segment.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

// RFC 7520 figures, copied from the RFC's text as vendored in jwcrypto's
// tests-cookbook.py and checked against the panva/jose cookbook. The two
// CEKs below are the RFC's, and each test first proves them by unwrapping the
// published encrypted key, so a typo here cannot pass silently.
const RFC7520_5_6_COMPACT: &str = "\
    eyJhbGciOiJkaXIiLCJraWQiOiI3N2M3ZTJiOC02ZTEzLTQ1Y2YtODY3Mi02MTdi\
    NWI0NTI0M2EiLCJlbmMiOiJBMTI4R0NNIn0..refa467QzzKx6QAB.JW_i_f52hw\
    w_ELQPGaYyeAB6HYGcR559l9TYnSovc23XJoBcW29rHP8yZOZG7YhLpT1bjFuvZP\
    jQS-m0IFtVcXkZXdH_lr_FrdYt9HRUYkshtrMmIUAyGmUnd9zMDB2n0cRDIHAzFV\
    eJUDxkUwVAE7_YGRPdcqMyiBoCO-FBdE-Nceb4h3-FtBP-c_BIwCPTjb9o0Sbdcd\
    REEMJMyZBH8ySWMVi1gPD9yxi-aQpGbSv_F9N4IZAxscj5g-NJsUPbjk29-s7LJA\
    Gb15wEBtXphVCgyy53CoIKLHHeJHXex45Uz9aKZSRSInZI-wjsY0yu3cT4_aQ3i1\
    o-tiE-F8Ios61EKgyIQ4CWao8PFMj8TTnp.vbb32Xvllea2OtmHAdccRQ";
const RFC7520_5_6_HEADER_JSON: &str =
    r#"{"alg":"dir","kid":"77c7e2b8-6e13-45cf-8672-617b5b45243a","enc":"A128GCM"}"#;
const RFC7520_5_6_KEY: &str = "XctOhJAkA-pD9Lh7ZgW_2A";
const RFC7520_5_6_IV: &str = "refa467QzzKx6QAB";
const RFC7520_5_8_COMPACT: &str = "\
    eyJhbGciOiJBMTI4S1ciLCJraWQiOiI4MWIyMDk2NS04MzMyLTQzZDktYTQ2OC04\
    MjE2MGFkOTFhYzgiLCJlbmMiOiJBMTI4R0NNIn0.CBI6oDw8MydIx1IBntf_lQcw\
    2MmJKIQx.Qx0pmsDa8KnJc9Jo.AwliP-KmWgsZ37BvzCefNen6VTbRK3QMA4TkvR\
    kH0tP1bTdhtFJgJxeVmJkLD61A1hnWGetdg11c9ADsnWgL56NyxwSYjU1ZEHcGkd\
    3EkU0vjHi9gTlb90qSYFfeF0LwkcTtjbYKCsiNJQkcIp1yeM03OmuiYSoYJVSpf7\
    ej6zaYcMv3WwdxDFl8REwOhNImk2Xld2JXq6BR53TSFkyT7PwVLuq-1GwtGHlQeg\
    7gDT6xW0JqHDPn_H-puQsmthc9Zg0ojmJfqqFvETUxLAF-KjcBTS5dNy6egwkYtO\
    t8EIHK-oEsKYtZRaa8Z7MOZ7UGxGIMvEmxrGCPeJa14slv2-gaqK0kEThkaSqdYw\
    0FkQZF.ER7MWJZ1FBI_NKvn7Zb1Lw";
const RFC7520_5_8_HEADER_JSON: &str =
    r#"{"alg":"A128KW","kid":"81b20965-8332-43d9-a468-82160ad91ac8","enc":"A128GCM"}"#;
const RFC7520_5_8_KEY: &str = "GZy6sIZ6wl9NJOKB-jnmVQ";
const RFC7520_5_8_IV: &str = "Qx0pmsDa8KnJc9Jo";
const RFC7520_5_9_COMPACT: &str = "\
    eyJhbGciOiJBMTI4S1ciLCJraWQiOiI4MWIyMDk2NS04MzMyLTQzZDktYTQ2OC04\
    MjE2MGFkOTFhYzgiLCJlbmMiOiJBMTI4R0NNIiwiemlwIjoiREVGIn0.5vUT2WOt\
    QxKWcekM_IzVQwkGgzlFDwPi.p9pUq6XHY0jfEZIl.HbDtOsdai1oYziSx25KEeT\
    xmwnh8L8jKMFNc1k3zmMI6VB8hry57tDZ61jXyezSPt0fdLVfe6Jf5y5-JaCap_J\
    QBcb5opbmT60uWGml8blyiMQmOn9J--XhhlYg0m-BHaqfDO5iTOWxPxFMUedx7WC\
    y8mxgDHj0aBMG6152PsM-w5E_o2B3jDbrYBKhpYA7qi3AyijnCJ7BP9rr3U8kxEx\
    CpG3mK420TjOw.VILuUwuIxaLVmh5X-T7kmA";
const RFC7520_5_2_COMPACT: &str = "\
    eyJhbGciOiJSU0EtT0FFUCIsImtpZCI6InNhbXdpc2UuZ2FtZ2VlQGhvYmJpdG9u\
    LmV4YW1wbGUiLCJlbmMiOiJBMjU2R0NNIn0.rT99rwrBTbTI7IJM8fU3Eli7226H\
    EB7IchCxNuh7lCiud48LxeolRdtFF4nzQibeYOl5S_PJsAXZwSXtDePz9hk-Bbts\
    TBqC2UsPOdwjC9NhNupNNu9uHIVftDyucvI6hvALeZ6OGnhNV4v1zx2k7O1D89mA\
    zfw-_kT3tkuorpDU-CpBENfIHX1Q58-Aad3FzMuo3Fn9buEP2yXakLXYa15BUXQs\
    upM4A1GD4_H4Bd7V3u9h8Gkg8BpxKdUV9ScfJQTcYm6eJEBz3aSwIaK4T3-dwWpu\
    BOhROQXBosJzS1asnuHtVMt2pKIIfux5BC6huIvmY7kzV7W7aIUrpYm_3H4zYvyM\
    eq5pGqFmW2k8zpO878TRlZx7pZfPYDSXZyS0CfKKkMozT_qiCwZTSz4duYnt8hS4\
    Z9sGthXn9uDqd6wycMagnQfOTs_lycTWmY-aqWVDKhjYNRf03NiwRtb5BE-tOdFw\
    CASQj3uuAgPGrO2AWBe38UjQb0lvXn1SpyvYZ3WFc7WOJYaTa7A8DRn6MC6T-xDm\
    MuxC0G7S2rscw5lQQU06MvZTlFOt0UvfuKBa03cxA_nIBIhLMjY2kOTxQMmpDPTr\
    6Cbo8aKaOnx6ASE5Jx9paBpnNmOOKH35j_QlrQhDWUN6A2Gg8iFayJ69xDEdHAVC\
    GRzN3woEI2ozDRs.-nBoKLH0YkLZPSI9.o4k2cnGN8rSSw3IDo1YuySkqeS_t2m1\
    GXklSgqBdpACm6UJuJowOHC5ytjqYgRL-I-soPlwqMUf4UgRWWeaOGNw6vGW-xyM\
    01lTYxrXfVzIIaRdhYtEMRBvBWbEwP7ua1DRfvaOjgZv6Ifa3brcAM64d8p5lhhN\
    cizPersuhw5f-pGYzseva-TUaL8iWnctc-sSwy7SQmRkfhDjwbz0fz6kFovEgj64\
    X1I5s7E6GLp5fnbYGLa1QUiML7Cc2GxgvI7zqWo0YIEc7aCflLG1-8BboVWFdZKL\
    K9vNoycrYHumwzKluLWEbSVmaPpOslY2n525DxDfWaVFUfKQxMF56vn4B9QMpWAb\
    nypNimbM8zVOw.UCGiqJxhBI3IFVdPalHHvA";
const RFC7520_5_7_KEY: &str = "qC57l_uxcm7Nm3K-ct4GFjx8tM1U8CZ0NLBvdQstiS8";
const RFC7520_5_7_PROTECTED: &str = "\
    eyJhbGciOiJBMjU2R0NNS1ciLCJraWQiOiIxOGVjMDhlMS1iZmE5LTRkOTUtYjIw\
    NS0yYjRkZDFkNDMyMWQiLCJ0YWciOiJrZlBkdVZRM1QzSDZ2bmV3dC0ta3N3Iiwi\
    aXYiOiJLa1lUMEdYXzJqSGxmcU5fIiwiZW5jIjoiQTEyOENCQy1IUzI1NiJ9";
const RFC7520_5_7_ENCRYPTED_KEY: &str = "lJf3HbOApxMEBkCMOoTnnABxs_CvTWUmZQ2ElLvYNok";
const RFC7520_5_7_IV: &str = "gz6NjyEFNm_vm8Gj6FwoFQ";
const RFC7520_5_7_CIPHERTEXT: &str = "\
    Jf5p9-ZhJlJy_IQ_byKFmI0Ro7w7G1QiaZpI8OaiVgD8EqoDZHyFKFBupS8iaEeV\
    IgMqWmsuJKuoVgzR3YfzoMd3GxEm3VxNhzWyWtZKX0gxKdy6HgLvqoGNbZCzLjqc\
    pDiF8q2_62EVAbr2uSc2oaxFmFuIQHLcqAHxy51449xkjZ7ewzZaGV3eFqhpco8o\
    4DijXaG5_7kp3h2cajRfDgymuxUbWgLqaeNQaJtvJmSMFuEOSAzw9Hdeb6yhdTyn\
    CRmu-kqtO5Dec4lT2OMZKpnxc_F1_4yDJFcqb5CiDSmA-psB2k0JtjxAj4UPI61o\
    ONK7zzFIu4gBfjJCndsZfdvG7h8wGjV98QhrKEnR7xKZ3KCr0_qR1B-gxpNk3xWU";
const RFC7520_5_7_TAG: &str = "DKW7jrb4WaRSNfbXVPlT5g";

/// RFC 7520 section 5.8.1's generated CEK (Figure 152).
const RFC7520_5_8_CEK: &str = "aY5_Ghmk9KxWPBLu_glx1w";
/// RFC 7520 section 5.7.1's generated CEK (A128CBC-HS256, 32 bytes).
const RFC7520_5_7_CEK: &str = "UWxARpat23nL9ReIj4WG3D1ee9I4r-Mv5QLuFXdy_rE";

/// RFC 7520 Figure 72: the plaintext of every section 5 example; the two
/// dashes are U+2013 EN DASH.
const RFC7520_PLAINTEXT: &str = "You can trust us to stick with you through thick and \
    thin\u{2013}to the bitter end. And you can trust us to keep any secret of \
    yours\u{2013}closer than you keep it yourself. But you cannot trust us to let you \
    face trouble alone, and go off without a word. We are your friends, Frodo.";

// RFC 7516 appendix A.3: A128KW + A128CBC-HS256 (A.3.1 header, A.3.2 CEK,
// A.3.3 key, A.3.4 IV, A.3.7 compact serialization).
const RFC7516_A3_HEADER_JSON: &str = r#"{"alg":"A128KW","enc":"A128CBC-HS256"}"#;
const RFC7516_A3_KEY: &str = "GawgguFyGrWKav7AX4VKUg";
const RFC7516_A3_CEK: [u8; 32] = [
    4, 211, 31, 197, 84, 157, 252, 254, 11, 100, 157, 250, 63, 170, 106, 206, 107, 124, 212, 45,
    111, 107, 9, 219, 200, 177, 0, 240, 143, 156, 44, 207,
];
const RFC7516_A3_IV: [u8; 16] = [
    3, 22, 60, 12, 43, 67, 104, 105, 108, 108, 105, 99, 111, 116, 104, 101,
];
const RFC7516_A3_COMPACT: &str = "\
    eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0.\
    6KB707dM9YTIgHtLvtgWQ8mKwboJW3of9locizkDTHzBC2IlrT1oOQ.\
    AxY8DCtDaGlsbGljb3RoZQ.\
    KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY.\
    U0m_YmjN04DJvceFICbCVQ";

fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn key(kid: Option<&str>, alg: &str, enc: Option<&str>, k_b64: &str) -> DecryptionKey {
    DecryptionKey::from_config(kid.map(str::to_owned), alg, enc, Some(k_b64), None, None).unwrap()
}

fn raw_key(kid: Option<&str>, alg: &str, enc: Option<&str>, k: &[u8]) -> DecryptionKey {
    DecryptionKey::from_config(kid.map(str::to_owned), alg, enc, None, Some(k), None).unwrap()
}

fn ring(keys: Vec<DecryptionKey>) -> KeyRing {
    KeyRing::new(keys)
        .unwrap()
        .with_accepted_encs(ContentEnc::ALL.to_vec())
}

// ---------------------------------------------------------------- RFC vectors

#[test]
fn rfc7520_5_6_dir_a128gcm_both_directions() {
    let kid = "77c7e2b8-6e13-45cf-8672-617b5b45243a";
    let r = ring(vec![key(
        Some(kid),
        "dir",
        Some("A128GCM"),
        RFC7520_5_6_KEY,
    )]);
    let out = decrypt(&r, RFC7520_5_6_COMPACT).unwrap();
    assert_eq!(out.plaintext, RFC7520_PLAINTEXT.as_bytes());
    assert_eq!((out.alg, out.enc), (KeyAlg::Dir, ContentEnc::A128Gcm));
    assert_eq!(out.header["kid"], kid);
    assert!(!out.cty_jwt);

    let again = encrypt_with(
        &r.keys()[0],
        RFC7520_PLAINTEXT.as_bytes(),
        RFC7520_5_6_HEADER_JSON,
        None,
        &b64d(RFC7520_5_6_IV),
    )
    .unwrap();
    assert_eq!(again, RFC7520_5_6_COMPACT);
}

#[test]
fn rfc7520_5_8_a128kw_a128gcm_both_directions() {
    let kid = "81b20965-8332-43d9-a468-82160ad91ac8";
    let r = ring(vec![key(Some(kid), "A128KW", None, RFC7520_5_8_KEY)]);
    let k = &r.keys()[0];
    let encrypted_key = b64d(RFC7520_5_8_COMPACT.split('.').nth(1).unwrap());
    let cek = k
        .unwrap_cek_for(ContentEnc::A128Gcm, &encrypted_key)
        .unwrap();
    assert_eq!(cek.as_slice(), b64d(RFC7520_5_8_CEK));

    let out = decrypt(&r, RFC7520_5_8_COMPACT).unwrap();
    assert_eq!(out.plaintext, RFC7520_PLAINTEXT.as_bytes());
    assert_eq!((out.alg, out.enc), (KeyAlg::A128Kw, ContentEnc::A128Gcm));

    let again = encrypt_with(
        k,
        RFC7520_PLAINTEXT.as_bytes(),
        RFC7520_5_8_HEADER_JSON,
        Some(&b64d(RFC7520_5_8_CEK)),
        &b64d(RFC7520_5_8_IV),
    )
    .unwrap();
    assert_eq!(again, RFC7520_5_8_COMPACT);
}

/// RFC 7520 section 5.7: A256GCMKW + A128CBC-HS256. The content layer is checked
/// byte for byte, then the whole token decrypts with the section's key.
#[test]
fn rfc7520_5_7_content_layer_a128cbc_hs256() {
    use aes_gcm::{AeadInPlace, Aes256Gcm, KeyInit};
    let header: serde_json::Value = serde_json::from_slice(&b64d(RFC7520_5_7_PROTECTED)).unwrap();
    let (kw_iv, kw_tag) = (
        header["iv"].as_str().unwrap(),
        header["tag"].as_str().unwrap(),
    );
    let mut cek = b64d(RFC7520_5_7_ENCRYPTED_KEY);
    Aes256Gcm::new_from_slice(&b64d(RFC7520_5_7_KEY))
        .unwrap()
        .decrypt_in_place_detached(
            b64d(kw_iv).as_slice().into(),
            b"",
            &mut cek,
            b64d(kw_tag).as_slice().into(),
        )
        .unwrap();
    assert_eq!(cek, b64d(RFC7520_5_7_CEK));

    let (ciphertext, tag) = content::seal(
        ContentEnc::A128CbcHs256,
        &cek,
        &b64d(RFC7520_5_7_IV),
        RFC7520_5_7_PROTECTED.as_bytes(),
        RFC7520_PLAINTEXT.as_bytes(),
    )
    .unwrap();
    assert_eq!(URL_SAFE_NO_PAD.encode(ciphertext), RFC7520_5_7_CIPHERTEXT);
    assert_eq!(URL_SAFE_NO_PAD.encode(tag), RFC7520_5_7_TAG);

    let token = [
        RFC7520_5_7_PROTECTED,
        RFC7520_5_7_ENCRYPTED_KEY,
        RFC7520_5_7_IV,
        RFC7520_5_7_CIPHERTEXT,
        RFC7520_5_7_TAG,
    ]
    .join(".");
    let r = ring(vec![key(
        Some("18ec08e1-bfa9-4d95-b205-2b4dd1d4321d"),
        "A256GCMKW",
        None,
        RFC7520_5_7_KEY,
    )]);
    let out = decrypt(&r, &token).unwrap();
    assert_eq!(out.plaintext, RFC7520_PLAINTEXT.as_bytes());
    assert_eq!(out.alg, KeyAlg::A256GcmKw);
    // The header's `tag` changed: the wrapped CEK does not authenticate.
    let mut header: serde_json::Value =
        serde_json::from_slice(&b64d(RFC7520_5_7_PROTECTED)).unwrap();
    header["tag"] = serde_json::json!("AAAAAAAAAAAAAAAAAAAAAA");
    let forged = token.replacen(
        RFC7520_5_7_PROTECTED,
        &URL_SAFE_NO_PAD.encode(header.to_string()),
        1,
    );
    assert_eq!(decrypt(&r, &forged).unwrap_err(), JweError::Decrypt);
}

#[test]
fn rfc7520_5_9_compressed_content_is_rejected_even_with_the_right_key() {
    let kid = "81b20965-8332-43d9-a468-82160ad91ac8";
    let r = ring(vec![key(Some(kid), "A128KW", None, RFC7520_5_8_KEY)]);
    assert_eq!(
        decrypt(&r, RFC7520_5_9_COMPACT).unwrap_err(),
        JweError::Unsupported
    );
}

#[test]
fn rfc7520_5_2_rsa_oaep_sha1_is_not_rsa_oaep_256() {
    // An RSA-OAEP-256 key never decrypts an RSA-OAEP (SHA-1) token: alg is pinned per key.
    let r = ring(vec![fixture_rsa_key(Some(
        "samwise.gamgee@hobbiton.example",
    ))]);
    assert_eq!(
        decrypt(&r, RFC7520_5_2_COMPACT).unwrap_err(),
        JweError::Decrypt
    );
}

#[test]
fn rfc7516_a3_a128kw_a128cbc_hs256_both_directions() {
    let r = ring(vec![key(None, "A128KW", None, RFC7516_A3_KEY)]);
    let out = decrypt(&r, RFC7516_A3_COMPACT).unwrap();
    assert_eq!(out.plaintext, b"Live long and prosper.");
    assert_eq!(
        (out.alg, out.enc),
        (KeyAlg::A128Kw, ContentEnc::A128CbcHs256)
    );
    let again = encrypt_with(
        &r.keys()[0],
        b"Live long and prosper.",
        RFC7516_A3_HEADER_JSON,
        Some(&RFC7516_A3_CEK),
        &RFC7516_A3_IV,
    )
    .unwrap();
    assert_eq!(again, RFC7516_A3_COMPACT);
}

// ------------------------------------------------- independent implementation

const JWCRYPTO_FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jwe_jwcrypto.json"
));

fn fixture() -> serde_json::Value {
    serde_json::from_str(JWCRYPTO_FIXTURE).unwrap()
}

fn fixture_rsa_pem() -> String {
    let f = fixture();
    let rsa = f["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["pem"].is_string())
        .unwrap();
    rsa["pem"].as_str().unwrap().to_owned()
}

fn fixture_rsa_key(kid: Option<&str>) -> DecryptionKey {
    let pem = fixture_rsa_pem();
    DecryptionKey::from_config(
        kid.map(str::to_owned),
        "RSA-OAEP-256",
        None,
        None,
        None,
        Some(pem.as_bytes()),
    )
    .unwrap()
}

fn fixture_ring() -> KeyRing {
    let f = fixture();
    let keys = f["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            DecryptionKey::from_config(
                k["kid"].as_str().map(str::to_owned),
                k["alg"].as_str().unwrap(),
                k["enc"].as_str(),
                k["k"].as_str(),
                None,
                k["pem"].as_str().map(str::as_bytes),
            )
            .unwrap()
        })
        .collect();
    ring(keys)
}

#[test]
fn jwcrypto_tokens_for_every_alg_and_enc_decrypt() {
    let f = fixture();
    let r = fixture_ring();
    let tokens = f["tokens"].as_array().unwrap();
    let mut pairs = std::collections::HashSet::new();
    for t in tokens {
        let token = t["token"].as_str().unwrap();
        let out =
            decrypt(&r, token).unwrap_or_else(|e| panic!("{} / {}: {e:?}", t["alg"], t["enc"]));
        assert_eq!(out.plaintext, t["plaintext"].as_str().unwrap().as_bytes());
        assert_eq!(out.alg.name(), t["alg"]);
        assert_eq!(out.enc.name(), t["enc"]);
        assert_eq!(out.cty_jwt, t["cty"] == "JWT");
        assert_eq!(out.header.get("kid"), t.get("kid").filter(|k| !k.is_null()));
        pairs.insert((out.alg, out.enc));
    }
    // 4 alg x 5 enc, each from jwcrypto, some with kid and some without.
    assert_eq!(pairs.len(), KeyAlg::ALL.len() * ContentEnc::ALL.len());
    assert!(tokens.iter().any(|t| t["kid"].is_null()));
    assert!(tokens.iter().any(|t| t["cty"] == "JWT"));
}

// ---------------------------------------------------------- encrypt/round trip

#[test]
fn encrypt_round_trips_for_every_key_kind_and_uses_fresh_randomness() {
    let mut keys: Vec<DecryptionKey> = ContentEnc::ALL
        .into_iter()
        .map(|enc| {
            raw_key(
                Some(enc.name()),
                "dir",
                Some(enc.name()),
                &vec![0x42; enc.cek_len()],
            )
        })
        .collect();
    keys.push(raw_key(
        Some("kw128"),
        "A128KW",
        Some("A256CBC-HS512"),
        &[1; 16],
    ));
    keys.push(raw_key(Some("kw256"), "A256KW", None, &[2; 32]));
    keys.push(fixture_rsa_key(Some("rsa")));
    let r = ring(keys);
    for k in r.keys() {
        let a = encrypt(k, b"{\"sub\":\"u1\"}", Some("JWT"), None).unwrap();
        let b = encrypt(k, b"{\"sub\":\"u1\"}", Some("JWT"), None).unwrap();
        assert_ne!(a, b, "IV/CEK must be fresh per token");
        assert!(is_jwe(&a));
        let out = decrypt(&r, &a).unwrap();
        assert_eq!(out.plaintext, b"{\"sub\":\"u1\"}");
        assert!(out.cty_jwt);
        assert_eq!(out.alg, k.alg);
        assert_eq!(out.enc, k.enc.unwrap_or(DEFAULT_ENC));
        assert_eq!(out.header["kid"].as_str(), k.kid.as_deref());
    }
    // An explicit kid overrides the key's own.
    let t = encrypt(&r.keys()[0], b"x", None, Some("other")).unwrap();
    assert_eq!(decrypt(&r, &t).unwrap_err(), JweError::Decrypt);
}

#[test]
fn encrypt_with_refuses_inputs_that_do_not_fit_the_key() {
    let dir = raw_key(None, "dir", Some("A256GCM"), &[3; 32]);
    let kw = raw_key(None, "A128KW", Some("A128GCM"), &[4; 16]);
    let h256 = r#"{"alg":"dir","enc":"A256GCM"}"#;
    let iv12 = [0u8; 12];
    assert!(encrypt_with(&dir, b"x", h256, None, &iv12).is_ok());
    assert_eq!(
        encrypt_with(&dir, b"x", h256, None, &[0; 16]),
        Err(JweError::Encrypt)
    );
    assert_eq!(
        encrypt_with(&dir, b"x", h256, Some(&[3; 32]), &iv12),
        Err(JweError::Encrypt)
    );
    assert_eq!(
        encrypt_with(&dir, b"x", r#"{"alg":"dir","enc":"A128GCM"}"#, None, &iv12),
        Err(JweError::Encrypt)
    );
    assert_eq!(
        encrypt_with(
            &dir,
            b"x",
            r#"{"alg":"dir","enc":"A256GCM","zip":"DEF"}"#,
            None,
            &iv12
        ),
        Err(JweError::Unsupported)
    );
    let hkw = r#"{"alg":"A128KW","enc":"A128GCM"}"#;
    assert!(encrypt_with(&kw, b"x", hkw, Some(&[5; 16]), &iv12).is_ok());
    assert_eq!(
        encrypt_with(&kw, b"x", hkw, Some(&[5; 32]), &iv12),
        Err(JweError::Encrypt)
    );
    assert_eq!(
        encrypt_with(
            &kw,
            b"x",
            r#"{"alg":"A128KW","enc":"A256GCM"}"#,
            None,
            &iv12
        ),
        Err(JweError::Encrypt)
    );
}

mod tamper;
