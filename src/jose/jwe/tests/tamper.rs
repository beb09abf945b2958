//! Tamper tests: every segment of the compact form altered in every way we
//! could think of, plus header alg/enc swaps, wrong keys and wrong lengths.
//! Anything that keeps the shapes the header implies must fail with the one
//! `JweError::Decrypt`.

use super::*;

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn join(segs: &[String]) -> String {
    segs.join(".")
}

fn with_segment(token: &str, i: usize, value: &str) -> String {
    let mut s = segments(token);
    s[i] = value.to_owned();
    join(&s)
}

fn with_decoded(token: &str, i: usize, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = b64d(&segments(token)[i]);
    f(&mut bytes);
    with_segment(token, i, &URL_SAFE_NO_PAD.encode(bytes))
}

const HEADER: usize = 0;
const KEY: usize = 1;
const IV: usize = 2;
const CIPHERTEXT: usize = 3;
const TAG: usize = 4;

/// Every alteration of every segment of `token` must fail; where the
/// alteration keeps the shape the header implies, it must be the single
/// `Decrypt` error. `other` is a valid token for the same key whose header
/// differs (cty), used for segment swaps.
fn assert_tamper_proof(r: &KeyRing, token: &str, other: &str) {
    use JweError::{Decrypt, Malformed};
    assert!(decrypt(r, token).is_ok());
    assert!(decrypt(r, other).is_ok());
    let alg = decrypt(r, token).unwrap().alg;
    let check = |what: &str, t: &str, want: &[JweError]| {
        let got = decrypt(r, t);
        assert!(
            matches!(&got, Err(e) if want.contains(e)),
            "{:?}: {what} gave {:?}, want one of {want:?}",
            alg,
            got.map(|d| d.plaintext)
        );
    };
    let seg = segments(token);
    let other_seg = segments(other);
    for i in 0..5 {
        let len = b64d(&seg[i]).len();
        // Bit flips at the first, a middle and the last byte.
        for pos in [0, len / 2, len.saturating_sub(1)] {
            if len == 0 {
                break;
            }
            for bit in [0x01u8, 0x80] {
                let t = with_decoded(token, i, |b| b[pos] ^= bit);
                let want: &[JweError] = match i {
                    // A flipped header byte may break JSON, rename alg/enc or
                    // just change the AAD: never accepted, never an oracle.
                    HEADER => &[Malformed, JweError::Unsupported, Decrypt],
                    _ => &[Decrypt],
                };
                check(&format!("segment {i} byte {pos} ^ {bit:#x}"), &t, want);
            }
        }
        // Truncate by one byte, extend by one byte.
        let fixed_len = matches!(i, IV | TAG) || (i == KEY && alg != KeyAlg::RsaOaep256);
        let (trunc_want, ext_want): (&[JweError], &[JweError]) = match i {
            HEADER => (&[Malformed], &[Decrypt]), // trailing space is valid JSON, new AAD
            _ if fixed_len => (&[Malformed], &[Malformed]),
            _ => (&[Decrypt], &[Decrypt]),
        };
        if len > 0 {
            check(
                &format!("segment {i} truncated"),
                &with_decoded(token, i, |b| {
                    b.pop();
                }),
                trunc_want,
            );
        }
        let pad = if i == HEADER { b' ' } else { 0 };
        check(
            &format!("segment {i} extended"),
            &with_decoded(token, i, |b| b.push(pad)),
            ext_want,
        );
        // Swapped with the other token's segment.
        if seg[i] != other_seg[i] {
            check(
                &format!("segment {i} swapped"),
                &with_segment(token, i, &other_seg[i]),
                &[Decrypt],
            );
        }
        // Emptied.
        if !seg[i].is_empty() {
            let want: &[JweError] = if i == CIPHERTEXT {
                &[Decrypt]
            } else {
                &[Malformed]
            };
            check(
                &format!("segment {i} emptied"),
                &with_segment(token, i, ""),
                want,
            );
        }
        // Encodings that are not strict base64url.
        for (what, t) in [
            ("padding", with_segment(token, i, &format!("{}=", seg[i]))),
            (
                "whitespace",
                with_segment(token, i, &format!("{} ", seg[i])),
            ),
            (
                "std alphabet",
                with_segment(token, i, &format!("+{}", seg[i])),
            ),
            (
                "non-canonical",
                with_segment(token, i, &non_canonical(&seg[i])),
            ),
        ] {
            if t != token {
                check(&format!("segment {i} {what}"), &t, &[Malformed]);
            }
        }
    }
    // Segment count.
    check("4 segments", &join(&seg[..4]), &[Malformed]);
    check("6 segments", &format!("{token}.{}", seg[TAG]), &[Malformed]);
    check("3 segments (a JWS)", &join(&seg[..3]), &[Malformed]);
    // Whole-token swap of header+key (other CEK, this token's body).
    let mut mixed = seg.clone();
    mixed[HEADER] = other_seg[HEADER].clone();
    mixed[KEY] = other_seg[KEY].clone();
    check(
        "header and key from another token",
        &join(&mixed),
        &[Decrypt],
    );
}

/// Flips a trailing bit that base64url decoding must ignore-and-reject; the
/// same segment unchanged when it has no spare bits (length % 4 == 0).
fn non_canonical(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if segment.len().is_multiple_of(4) {
        return segment.to_owned();
    }
    let mut bytes = segment.as_bytes().to_vec();
    let last = bytes.last_mut().unwrap();
    let idx = ALPHABET.iter().position(|c| c == last).unwrap();
    *last = ALPHABET[idx ^ 1];
    String::from_utf8(bytes).unwrap()
}

fn tamper_pair(k: &DecryptionKey) -> (String, String) {
    let token = encrypt(
        k,
        br#"{"sub":"alice","admin":false,"pad":"0123456789abcdef0123"}"#,
        None,
        None,
    )
    .unwrap();
    let other = encrypt(k, br#"{"sub":"mallory","admin":true}"#, Some("JWT"), None).unwrap();
    (token, other)
}

#[test]
fn tampering_with_any_segment_fails_for_every_dir_enc() {
    for enc in ContentEnc::ALL {
        let r = ring(vec![raw_key(
            Some("d"),
            "dir",
            Some(enc.name()),
            &vec![9; enc.cek_len()],
        )]);
        let (token, other) = tamper_pair(&r.keys()[0]);
        assert_tamper_proof(&r, &token, &other);
    }
}

#[test]
fn tampering_with_any_segment_fails_for_key_wrap() {
    for (alg, len, enc) in [
        ("A128KW", 16, ContentEnc::A128CbcHs256),
        ("A256KW", 32, ContentEnc::A256Gcm),
    ] {
        let r = ring(vec![raw_key(None, alg, Some(enc.name()), &vec![6; len])]);
        let (token, other) = tamper_pair(&r.keys()[0]);
        assert_tamper_proof(&r, &token, &other);
    }
}

#[test]
fn tampering_with_any_segment_fails_for_rsa_oaep_256() {
    let r = ring(vec![fixture_rsa_key(None)]);
    let (token, other) = tamper_pair(&r.keys()[0]);
    assert_tamper_proof(&r, &token, &other);
}

#[test]
fn rsa_unwrap_failures_are_indistinguishable_from_a_wrong_key() {
    use rsa::traits::PublicKeyParts;
    let r = ring(vec![fixture_rsa_key(None)]);
    let k = &r.keys()[0];
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RSA-OAEP-256","enc":"A256GCM"}"#);
    let body = |ek: &[u8]| {
        format!(
            "{header}.{}.{}.{}.{}",
            URL_SAFE_NO_PAD.encode(ek),
            URL_SAFE_NO_PAD.encode([0u8; 12]),
            URL_SAFE_NO_PAD.encode(b"ciphertext"),
            URL_SAFE_NO_PAD.encode([0u8; 16])
        )
    };
    let public = {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::RsaPublicKey::from(&rsa::RsaPrivateKey::from_pkcs8_pem(&fixture_rsa_pem()).unwrap())
    };
    let modulus = public.size();
    // Random bytes (bad OAEP padding), too short, too long, and a well-formed
    // OAEP ciphertext of a CEK with the wrong length: all the same error.
    let wrong_len_cek = public
        .encrypt(&mut OsRng, rsa::Oaep::new::<sha2::Sha256>(), &[7u8; 16])
        .unwrap();
    for ek in [
        vec![0x5a; modulus],
        vec![1; 10],
        vec![1; modulus + 1],
        wrong_len_cek,
    ] {
        assert_eq!(decrypt(&r, &body(&ek)).unwrap_err(), JweError::Decrypt);
        // And the unwrap itself "succeeds" with a random CEK, as RFC 7516 11.5 asks.
        let a = k.unwrap_cek_for(ContentEnc::A256Gcm, &ek).unwrap();
        let b = k.unwrap_cek_for(ContentEnc::A256Gcm, &ek).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}

#[test]
fn header_alg_or_enc_changed_to_another_allowed_value_fails() {
    let r = ring(vec![
        raw_key(None, "dir", Some("A192GCM"), &[1; 24]),
        raw_key(None, "dir", Some("A256GCM"), &[1; 32]),
        raw_key(None, "A128KW", None, &[2; 16]),
        raw_key(None, "A256KW", None, &[2; 32]),
    ]);
    let reheader =
        |token: &str, json: &str| with_segment(token, HEADER, &URL_SAFE_NO_PAD.encode(json));

    // enc A192GCM -> A256GCM: same shapes, the other dir key, tag fails.
    let t = encrypt(&r.keys()[0], b"claims", None, None).unwrap();
    assert_eq!(
        decrypt(&r, &reheader(&t, r#"{"alg":"dir","enc":"A256GCM"}"#)).unwrap_err(),
        JweError::Decrypt
    );
    // alg A128KW -> A256KW with enc A128GCM: same wrapped-key length, other KEK.
    let kw = raw_key(None, "A128KW", Some("A128GCM"), &[2; 16]);
    let t = encrypt(&kw, b"claims", None, None).unwrap();
    assert!(decrypt(&r, &t).is_ok());
    assert_eq!(
        decrypt(&r, &reheader(&t, r#"{"alg":"A256KW","enc":"A128GCM"}"#)).unwrap_err(),
        JweError::Decrypt
    );
    // alg A128KW -> dir: a dir token cannot carry an encrypted key.
    assert_eq!(
        decrypt(&r, &reheader(&t, r#"{"alg":"dir","enc":"A128GCM"}"#)).unwrap_err(),
        JweError::Malformed
    );
    // enc A128GCM -> A256GCM under A128KW: the wrapped key is too short for it.
    assert_eq!(
        decrypt(&r, &reheader(&t, r#"{"alg":"A128KW","enc":"A256GCM"}"#)).unwrap_err(),
        JweError::Malformed
    );
    // Same alg/enc but the header re-serialized: AAD differs.
    assert_eq!(
        decrypt(&r, &reheader(&t, r#"{"enc":"A128GCM","alg":"A128KW"}"#)).unwrap_err(),
        JweError::Decrypt
    );
}

#[test]
fn an_enc_the_key_does_not_allow_is_refused_even_if_it_would_decrypt() {
    // The key bytes would decrypt an A128CBC-HS256 token, but the key is
    // configured for A256GCM only.
    let permissive = raw_key(None, "dir", Some("A128CBC-HS256"), &[8; 32]);
    let t = encrypt(&permissive, b"claims", None, None).unwrap();
    let strict = ring(vec![raw_key(None, "dir", Some("A256GCM"), &[8; 32])]);
    assert_eq!(decrypt(&strict, &t).unwrap_err(), JweError::Decrypt);
    let kw_strict = ring(vec![raw_key(None, "A128KW", Some("A256GCM"), &[8; 16])]);
    let kw_any = raw_key(None, "A128KW", None, &[8; 16]);
    let t = encrypt_with(
        &kw_any,
        b"c",
        r#"{"alg":"A128KW","enc":"A128GCM"}"#,
        None,
        &[0; 12],
    )
    .unwrap();
    assert_eq!(decrypt(&kw_strict, &t).unwrap_err(), JweError::Decrypt);
}

#[test]
fn wrong_key_unknown_kid_and_empty_ring_are_the_same_error() {
    let right = raw_key(Some("k1"), "dir", Some("A256GCM"), &[1; 32]);
    let t = encrypt(&right, b"claims", None, None).unwrap();
    let cases = [
        ring(vec![raw_key(Some("k1"), "dir", Some("A256GCM"), &[2; 32])]),
        ring(vec![raw_key(Some("k2"), "dir", Some("A256GCM"), &[1; 32])]),
        ring(vec![]),
    ];
    for r in &cases {
        assert_eq!(decrypt(r, &t).unwrap_err(), JweError::Decrypt);
        assert_eq!(
            decrypt(r, &t).unwrap_err().to_string(),
            "JWE decryption failed"
        );
    }
    // Without a kid, every key allowing the alg/enc is tried in order.
    let anon = raw_key(None, "dir", Some("A256GCM"), &[1; 32]);
    let t = encrypt(&anon, b"claims", None, None).unwrap();
    let r = ring(vec![
        raw_key(Some("a"), "dir", Some("A256GCM"), &[2; 32]),
        raw_key(Some("b"), "dir", Some("A256GCM"), &[1; 32]),
    ]);
    assert_eq!(decrypt(&r, &t).unwrap().plaintext, b"claims");
}

#[test]
fn wrong_iv_and_tag_lengths_are_rejected_before_decryption() {
    let k = raw_key(None, "dir", Some("A256GCM"), &[1; 32]);
    let r = ring(vec![k]);
    let t = encrypt(&r.keys()[0], b"claims", None, None).unwrap();
    for iv_len in [0, 8, 11, 13, 16] {
        let bad = with_segment(&t, IV, &URL_SAFE_NO_PAD.encode(vec![0u8; iv_len]));
        assert_eq!(
            decrypt(&r, &bad).unwrap_err(),
            JweError::Malformed,
            "iv {iv_len}"
        );
    }
    for tag_len in [0, 8, 12, 15, 17, 32] {
        let bad = with_segment(&t, TAG, &URL_SAFE_NO_PAD.encode(vec![0u8; tag_len]));
        assert_eq!(
            decrypt(&r, &bad).unwrap_err(),
            JweError::Malformed,
            "tag {tag_len}"
        );
    }
    // CBC: a 12-byte (GCM-sized) IV, and an HS512 token cut to an HS256-sized tag.
    let cbc = ring(vec![raw_key(None, "dir", Some("A256CBC-HS512"), &[1; 64])]);
    let t = encrypt(&cbc.keys()[0], b"claims", None, None).unwrap();
    let short_iv = with_segment(&t, IV, &URL_SAFE_NO_PAD.encode([0u8; 12]));
    assert_eq!(decrypt(&cbc, &short_iv).unwrap_err(), JweError::Malformed);
    let half_tag = with_decoded(&t, TAG, |tag| tag.truncate(16));
    assert_eq!(decrypt(&cbc, &half_tag).unwrap_err(), JweError::Malformed);
}

#[test]
fn size_bound_is_enforced_before_parsing() {
    let k = raw_key(None, "dir", Some("A128GCM"), &[1; 16]);
    let t = encrypt(&k, &[b'x'; 300], None, None).unwrap();
    let exact =
        ring(vec![raw_key(None, "dir", Some("A128GCM"), &[1; 16])]).with_max_token_bytes(t.len());
    assert!(decrypt(&exact, &t).is_ok());
    let tight = ring(vec![raw_key(None, "dir", Some("A128GCM"), &[1; 16])])
        .with_max_token_bytes(t.len() - 1);
    assert_eq!(decrypt(&tight, &t).unwrap_err(), JweError::Malformed);
    let default = ring(vec![]);
    assert_eq!(default.max_token_bytes(), DEFAULT_MAX_TOKEN_BYTES);
    let huge = format!("{}.a.a.a.a", "e".repeat(DEFAULT_MAX_TOKEN_BYTES));
    assert_eq!(decrypt(&default, &huge).unwrap_err(), JweError::Malformed);
}

#[test]
fn is_jwe_counts_segments() {
    assert!(is_jwe(RFC7520_5_6_COMPACT));
    assert!(is_jwe("a.b.c.d.e"));
    assert!(!is_jwe("a.b.c"));
    assert!(!is_jwe("a.b.c.d.e.f"));
    assert!(!is_jwe(""));
}
