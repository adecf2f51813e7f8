//! G.711 (ITU-T G.711) μ-law and A-law: the two codecs pivotd speaks.
//!
//! Encoding follows the reference segment tables (the classic Sun `g711.c`): μ-law adds a bias
//! of 0x84 to the magnitude (clipped at 32635) and takes the segment from the position of the
//! highest bit; A-law works on the 13-bit value and inverts even bits (XOR 0x55). Decoding goes
//! through 256-entry tables built at compile time.

/// The G.711 laws pivotd can send and receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// μ-law, RTP static payload type 0 (RFC 3551 §6).
    Pcmu,
    /// A-law, RTP static payload type 8 (RFC 3551 §6).
    Pcma,
}

impl Codec {
    /// The static RTP payload type of RFC 3551 table 4.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name used in `a=rtpmap` (RFC 3551 §4.5.14).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// RTP clock rate of both laws.
    pub fn clock_rate(self) -> u32 {
        8000
    }

    /// Recognises an `a=rtpmap` encoding name (case-insensitive, RFC 4566 §6).
    pub fn from_encoding_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }

    /// Encodes 16-bit linear samples, one byte per sample.
    pub fn encode(self, pcm: &[i16]) -> Vec<u8> {
        match self {
            Codec::Pcmu => pcm.iter().map(|&s| ulaw_encode(s)).collect(),
            Codec::Pcma => pcm.iter().map(|&s| alaw_encode(s)).collect(),
        }
    }

    /// Decodes G.711 bytes to 16-bit linear samples.
    pub fn decode(self, g711: &[u8]) -> Vec<i16> {
        g711.iter().map(|&b| self.decode_one(b)).collect()
    }

    /// One G.711 byte as a 16-bit linear sample.
    pub fn decode_one(self, b: u8) -> i16 {
        let table = match self {
            Codec::Pcmu => &ULAW_TABLE,
            Codec::Pcma => &ALAW_TABLE,
        };
        table[usize::from(b)]
    }

    /// The codec of a static RTP payload type (0, 8); None for any other.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        [Codec::Pcmu, Codec::Pcma]
            .into_iter()
            .find(|c| c.payload_type() == pt)
    }

    /// The byte that encodes linear 0 (what to send as silence).
    pub fn silence_byte(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }
}

/// Byte-wise transcoding from one law to the other, through linear: `out[i]` encodes in
/// `to` the sample `src[i]` encodes in `from`. Table-driven (two 256-byte tables built once),
/// no allocation: the relay calls it per packet. Equal laws copy. Lengths: the shorter.
pub fn transcode(from: Codec, to: Codec, src: &[u8], out: &mut [u8]) {
    static TABLES: std::sync::OnceLock<([u8; 256], [u8; 256])> = std::sync::OnceLock::new();
    let (u2a, a2u) = TABLES.get_or_init(|| {
        let mut u2a = [0u8; 256];
        let mut a2u = [0u8; 256];
        for b in 0..=255u8 {
            u2a[usize::from(b)] = alaw_encode(ulaw_decode(b));
            a2u[usize::from(b)] = ulaw_encode(alaw_decode(b));
        }
        (u2a, a2u)
    });
    let table = match (from, to) {
        (Codec::Pcmu, Codec::Pcma) => u2a,
        (Codec::Pcma, Codec::Pcmu) => a2u,
        _ => {
            let n = src.len().min(out.len());
            if let (Some(o), Some(s)) = (out.get_mut(..n), src.get(..n)) {
                o.copy_from_slice(s);
            }
            return;
        }
    };
    for (o, s) in out.iter_mut().zip(src) {
        *o = table[usize::from(*s)];
    }
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// μ-law encoding of one sample (G.711 §2, bias 0x84).
pub fn ulaw_encode(s: i16) -> u8 {
    let mut v = i32::from(s);
    let sign: u8 = if v < 0 { 0x80 } else { 0 };
    if v < 0 {
        v = -v;
    }
    v = v.min(ULAW_CLIP) + ULAW_BIAS;
    // Segment = index of the highest set bit above bit 7 (v >= 0x84 so bit 7 region is set).
    let exponent = (31 - (v as u32).leading_zeros()).saturating_sub(7).min(7) as u8;
    let mantissa = ((v >> (exponent + 3)) & 0x0F) as u8;
    !(sign | (exponent << 4) | mantissa)
}

/// μ-law decoding of one byte.
pub fn ulaw_decode(b: u8) -> i16 {
    ULAW_TABLE[usize::from(b)]
}

/// A-law encoding of one sample (G.711 §3, even bits inverted).
pub fn alaw_encode(s: i16) -> u8 {
    // A-law works on 13 bits.
    let mut v = i32::from(s) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    // Segment ends of the 13-bit magnitude.
    const SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let seg = SEG_END.iter().position(|&end| v <= end).unwrap_or(8);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mant = if seg < 2 {
        (v >> 1) & 0x0F
    } else {
        (v >> seg) & 0x0F
    };
    (((seg as u8) << 4) | mant as u8) ^ mask
}

/// A-law decoding of one byte.
pub fn alaw_decode(b: u8) -> i16 {
    ALAW_TABLE[usize::from(b)]
}

const fn ulaw_decode_calc(b: u8) -> i16 {
    let u = !b;
    let mut t = (((u & 0x0F) as i32) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    if u & 0x80 != 0 {
        (ULAW_BIAS - t) as i16
    } else {
        (t - ULAW_BIAS) as i16
    }
}

const fn alaw_decode_calc(b: u8) -> i16 {
    let a = b ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode_calc(i as u8)
        } else {
            ulaw_decode_calc(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = build_table(false);
static ALAW_TABLE: [i16; 256] = build_table(true);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-32124), 0x00);
        assert_eq!(ulaw_encode(32124), 0x80);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        // Smallest step: ±8 (bias makes segment 0 steps of 8).
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_encode(8), 0xFE);
        assert_eq!(ulaw_encode(1000), 0xCE);
        assert_eq!(ulaw_decode(0xCE), 988);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_encode(1000), 0xFA);
        assert_eq!(alaw_decode(0xFA), 1008);
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            let u = ulaw_decode(b);
            // 0x7F and 0xFF both decode to 0; 0 encodes to 0xFF.
            let expect = if b == 0x7F { 0xFF } else { b };
            assert_eq!(ulaw_encode(u), expect, "ulaw byte {b:#04x} -> {u}");
            let a = alaw_decode(b);
            assert_eq!(alaw_encode(a), b, "alaw byte {b:#04x} -> {a}");
        }
    }

    #[test]
    fn monotonic_and_close() {
        let mut prev_u = i16::MIN;
        let mut prev_a = i16::MIN;
        for s in i16::MIN..=i16::MAX {
            let u = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            assert!(u >= prev_u, "ulaw not monotonic at {s}");
            assert!(a >= prev_a, "alaw not monotonic at {s}");
            prev_u = u;
            prev_a = a;
            // Quantisation error bounded by half the largest step (1024) plus clipping.
            let eu = (i32::from(u) - i32::from(s)).abs();
            let ea = (i32::from(a) - i32::from(s)).abs();
            let bound = (i32::from(s).abs() / 16).max(16) + 700;
            assert!(eu <= bound, "ulaw error {eu} at {s}");
            assert!(ea <= bound, "alaw error {ea} at {s}");
        }
    }

    #[test]
    fn transcoding_goes_through_linear() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut out = [0u8; 256];
        transcode(Codec::Pcmu, Codec::Pcma, &all, &mut out);
        for (u, a) in all.iter().zip(out.iter()) {
            assert_eq!(*a, alaw_encode(ulaw_decode(*u)));
        }
        transcode(Codec::Pcma, Codec::Pcmu, &all, &mut out);
        for (a, u) in all.iter().zip(out.iter()) {
            assert_eq!(*u, ulaw_encode(alaw_decode(*a)));
        }
        transcode(Codec::Pcmu, Codec::Pcmu, &all[..10], &mut out);
        assert_eq!(&out[..10], &all[..10]);
        // Silence stays silence.
        transcode(Codec::Pcmu, Codec::Pcma, &[0xFF], &mut out);
        assert_eq!(out[0], 0xD5);
    }

    #[test]
    fn codec_helpers() {
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::Pcmu.encoding_name(), "PCMU");
        assert_eq!(Codec::Pcma.encoding_name(), "PCMA");
        assert_eq!(Codec::from_encoding_name("pcma"), Some(Codec::Pcma));
        assert_eq!(Codec::from_encoding_name("G729"), None);
        for c in [Codec::Pcmu, Codec::Pcma] {
            assert_eq!(
                c.decode(&[c.silence_byte()]),
                vec![if c == Codec::Pcmu { 0 } else { 8 }]
            );
            let pcm = [0i16, 100, -100, 30000, -30000];
            let back = c.decode(&c.encode(&pcm));
            assert_eq!(back.len(), pcm.len());
            for (x, y) in pcm.iter().zip(back.iter()) {
                assert!(
                    (i32::from(*x) - i32::from(*y)).abs() <= 1024,
                    "{c:?} {x} vs {y}"
                );
            }
        }
    }
}
