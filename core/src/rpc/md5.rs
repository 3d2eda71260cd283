//! MD5 (RFC 1321) as a `const fn`: coro_rpc function ids and struct_pack type hashes are the
//! first four digest bytes of a name or a type literal, so the RPC table is computed at
//! compile time. Only short inputs are hashed; speed does not matter.

const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15,
    21,
];

const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501, 0x698098d8,
    0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
    0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87,
    0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039,
    0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
    0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
    0xeb86d391,
];

/// Byte `i` of the padded message `a ‖ b ‖ 0x80 ‖ 0… ‖ bit length (u64 LE)`.
const fn padded_byte(a: &[u8], b: &[u8], i: usize, total: usize) -> u8 {
    let n = a.len() + b.len();
    if i < a.len() {
        a[i]
    } else if i < n {
        b[i - a.len()]
    } else if i == n {
        0x80
    } else if i >= total - 8 {
        ((n as u64 * 8) >> (8 * (i - (total - 8)))) as u8
    } else {
        0
    }
}

/// MD5 of the concatenation `a ‖ b`.
pub const fn md5_concat(a: &[u8], b: &[u8]) -> [u8; 16] {
    let n = a.len() + b.len();
    let total = (n + 8) / 64 * 64 + 64;
    let mut st = [0x67452301u32, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut block = 0;
    while block < total {
        let mut m = [0u32; 16];
        let mut w = 0;
        while w < 16 {
            let base = block + 4 * w;
            m[w] = u32::from_le_bytes([
                padded_byte(a, b, base, total),
                padded_byte(a, b, base + 1, total),
                padded_byte(a, b, base + 2, total),
                padded_byte(a, b, base + 3, total),
            ]);
            w += 1;
        }
        let (mut x0, mut x1, mut x2, mut x3) = (st[0], st[1], st[2], st[3]);
        let mut i = 0;
        while i < 64 {
            let (f, g) = match i / 16 {
                0 => ((x1 & x2) | (!x1 & x3), i),
                1 => ((x3 & x1) | (!x3 & x2), (5 * i + 1) % 16),
                2 => (x1 ^ x2 ^ x3, (3 * i + 5) % 16),
                _ => (x2 ^ (x1 | !x3), (7 * i) % 16),
            };
            let t = x3;
            x3 = x2;
            x2 = x1;
            x1 = x1.wrapping_add(x0.wrapping_add(f).wrapping_add(K[i]).wrapping_add(m[g]).rotate_left(S[i]));
            x0 = t;
            i += 1;
        }
        st[0] = st[0].wrapping_add(x0);
        st[1] = st[1].wrapping_add(x1);
        st[2] = st[2].wrapping_add(x2);
        st[3] = st[3].wrapping_add(x3);
        block += 64;
    }
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = st[i].to_le_bytes();
        out[4 * i] = b[0];
        out[4 * i + 1] = b[1];
        out[4 * i + 2] = b[2];
        out[4 * i + 3] = b[3];
        i += 1;
    }
    out
}

/// The first four digest bytes of `a ‖ b`, read big-endian (yalantinglibs `MD5Hash32`).
pub const fn md5_hash32(a: &[u8], b: &[u8]) -> u32 {
    let d = md5_concat(a, b);
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 16]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn rfc1321_vectors() {
        assert_eq!(hex(md5_concat(b"", b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(md5_concat(b"a", b"")), "0cc175b9c0f1b6a831c399e269772661");
        assert_eq!(hex(md5_concat(b"ab", b"c")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(hex(md5_concat(b"message ", b"digest")), "f96b697d7cb7938d525a2f31aaf161d0");
        let long = b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
        assert_eq!(hex(md5_concat(&long[..40], &long[40..])), "57edf4a22be3c955ac49da2e2107b67a");
        // 55 and 56 bytes straddle the padding boundary.
        assert_eq!(hex(md5_concat(&[b'a'; 55], b"")), "ef1772b6dff9a122358552954ad0df65");
        assert_eq!(hex(md5_concat(&[b'a'; 56], b"")), "3b0c8ac703f828b04c6c197006d17218");
    }
}
