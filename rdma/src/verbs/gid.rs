//! GIDs as upstream writes them in descriptors and handshakes (data-plane.md §3.2): the 16 raw
//! bytes as `%02x`, joined by `:` (`fe:80:00:00:…`, 47 characters).

use std::fmt;

/// A 16-byte InfiniBand/RoCE GID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Gid(pub [u8; 16]);

/// Why a GID string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GidError(pub String);

impl fmt::Display for GidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid GID {:?}: expected 16 hex bytes joined by ':'", self.0)
    }
}

impl std::error::Error for GidError {}

impl Gid {
    /// Parses upstream's format. Like upstream's `istringstream >> std::hex` each field is
    /// one or two hex digits (`0` and `00` both parse); exactly 16 fields are required.
    pub fn parse(s: &str) -> Result<Self, GidError> {
        let err = || GidError(s.to_owned());
        let mut raw = [0u8; 16];
        let mut fields = s.split(':');
        for byte in raw.iter_mut() {
            let field = fields.next().ok_or_else(err)?;
            if field.is_empty() || field.len() > 2 || !field.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(field, 16).map_err(|_| err())?;
        }
        if fields.next().is_some() {
            return Err(err());
        }
        Ok(Self(raw))
    }

    /// All zero: an unpopulated GID table entry.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// An IPv4-mapped GID (`::ffff:a.b.c.d`), what RoCE v2 over IPv4 uses.
    pub fn is_ipv4_mapped(&self) -> bool {
        self.0[..10] == [0; 10] && self.0[10] == 0xff && self.0[11] == 0xff
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn upstream_format() {
        let mut raw = [0u8; 16];
        raw[10] = 0xff;
        raw[11] = 0xff;
        raw[12..].copy_from_slice(&[10, 0, 0, 1]);
        let gid = Gid(raw);
        assert_eq!(gid.to_string(), "00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:01");
        assert!(gid.is_ipv4_mapped());
        assert_eq!(Gid::parse("00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:01"), Ok(gid));
        let link_local = Gid::parse("fe:80:00:00:00:00:00:00:02:1a:2b:ff:fe:3c:4d:5e").unwrap();
        assert_eq!(link_local.0[0], 0xfe);
        assert!(!link_local.is_ipv4_mapped());
        assert_eq!(Gid::parse("0:0:0:0:0:0:0:0:0:0:FF:ff:a:0:0:1"), Ok(gid));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "00",
            "00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00",
            "00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:01:02",
            "00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:001",
            "00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:g1",
            "00:00:00:00:00:00:00:00:00:00:ff:ff:0a:00::01",
            "+0:00:00:00:00:00:00:00:00:00:ff:ff:0a:00:00:01",
        ] {
            assert!(Gid::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Gid::default().is_zero());
    }

    proptest! {
        #[test]
        fn round_trip(raw in any::<[u8; 16]>()) {
            let s = Gid(raw).to_string();
            prop_assert_eq!(s.len(), 47);
            prop_assert_eq!(Gid::parse(&s), Ok(Gid(raw)));
        }
    }
}
