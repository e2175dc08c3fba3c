//! TensorBoard's file format: `Event` protocol buffers (tensorflow/core/util/event.proto,
//! the fields flow writes) encoded with prost, each framed as a TFRecord — length, masked
//! CRC-32C of the length, data, masked CRC-32C of the data.

use prost::Message;

/// `tensorflow.Event`: one record of an event file.
#[derive(Clone, PartialEq, Message)]
pub(super) struct Event {
    #[prost(double, tag = "1")]
    pub(super) wall_time: f64,
    #[prost(int64, tag = "2")]
    pub(super) step: i64,
    /// The first event of a file says which format follows.
    #[prost(string, optional, tag = "3")]
    pub(super) file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub(super) summary: Option<Summary>,
}

/// `tensorflow.Summary`: the values of one step.
#[derive(Clone, PartialEq, Message)]
pub(super) struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub(super) value: Vec<Value>,
}

/// `tensorflow.Summary.Value` with a scalar (`simple_value`, a 32-bit float: what TensorBoard's
/// scalar dashboard reads).
#[derive(Clone, PartialEq, Message)]
pub(super) struct Value {
    #[prost(string, tag = "1")]
    pub(super) tag: String,
    #[prost(float, optional, tag = "2")]
    pub(super) simple_value: Option<f32>,
}

/// The CRC TFRecord stores: CRC-32C, rotated and offset so that a CRC of data holding CRCs is
/// not degenerate.
fn masked(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// `event` as one TFRecord.
pub(super) fn frame(event: &Event) -> Vec<u8> {
    let data = event.encode_to_vec();
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked(&len).to_le_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(&masked(&data).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_is_masked_as_tensorflow_masks_it() {
        // TensorFlow's crc32c::Mask of crc32c("") = 0 and of crc32c("a") = 0xc1d04330
        // (tensorflow/core/lib/hash/crc32c.h: ((crc >> 15) | (crc << 17)) + 0xa282ead8).
        assert_eq!(masked(b""), 0xa282_ead8);
        assert_eq!(masked(b"a"), 0xc1d0_4330u32.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn a_frame_holds_the_length_the_event_and_both_crcs() {
        let e = Event { wall_time: 1.5, step: 7, file_version: Some("brain.Event:2".into()), summary: None };
        let f = frame(&e);
        let len = u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
        assert_eq!(f.len(), 8 + 4 + len + 4);
        assert_eq!(Event::decode(&f[12..12 + len]).unwrap(), e);
        assert_eq!(u32::from_le_bytes(f[8..12].try_into().unwrap()), masked(&f[..8]));
    }
}
