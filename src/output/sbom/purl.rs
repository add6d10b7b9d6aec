//! Package URLs (<https://github.com/package-url/purl-spec>): `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`.
//! Each part is percent-encoded but for the unreserved characters, so a Debian epoch's `:` is
//! `%3A` and `+` is `%2B` (a `+` would read as a space to a form decoder); qualifiers are sorted
//! by key, as the spec's canonical form has them.
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What stays as it is: RFC 3986's unreserved characters.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

pub fn encode(
    ty: &str,
    namespace: &str,
    name: &str,
    version: &str,
    qualifiers: &[(&str, &str)],
) -> String {
    let part = |s: &str| utf8_percent_encode(s, ENCODED).to_string();
    let mut purl = format!(
        "pkg:{ty}/{}/{}@{}",
        part(namespace),
        part(name),
        part(version)
    );
    let mut qualifiers: Vec<_> = qualifiers.iter().filter(|(_, v)| !v.is_empty()).collect();
    qualifiers.sort_by_key(|(k, _)| *k);
    for (i, (key, value)) in qualifiers.iter().enumerate() {
        purl.push(if i == 0 { '?' } else { '&' });
        purl.push_str(&format!("{key}={}", part(value)));
    }
    purl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_names_are_percent_encoded() {
        assert_eq!(
            encode(
                "deb",
                "debian",
                "openssl",
                "3.5.1-1",
                &[("distro", "debian-13"), ("arch", "amd64")]
            ),
            "pkg:deb/debian/openssl@3.5.1-1?arch=amd64&distro=debian-13"
        );
        assert_eq!(
            encode(
                "deb",
                "debian",
                "libstdc++6",
                "1:2.3-4+b1",
                &[("arch", "amd64")]
            ),
            "pkg:deb/debian/libstdc%2B%2B6@1%3A2.3-4%2Bb1?arch=amd64"
        );
        assert_eq!(
            encode(
                "apk",
                "alpine",
                "busybox",
                "1.36.1-r29",
                &[("arch", "x86_64"), ("distro", "alpine-3.20")]
            ),
            "pkg:apk/alpine/busybox@1.36.1-r29?arch=x86_64&distro=alpine-3.20"
        );
        assert_eq!(
            encode("deb", "debian", "a", "1", &[("arch", "")]),
            "pkg:deb/debian/a@1"
        );
    }
}
