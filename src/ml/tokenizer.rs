//! [`Tokenizer`]: a byte-level BPE tokenizer trained with Hugging Face's `tokenizers` crate and
//! saved as a standard `tokenizer.json`.
//!
//! No prefix space is added and no normaliser runs, so `decode(encode(s)) == s` for every
//! string, and every byte is encodable (the 256 byte symbols are in the initial alphabet).
//! The special tokens have fixed ids 0..[`SPECIAL`]`.len()`, reserved at data-build time so
//! their embeddings exist from pretraining (the chat template of fine-tuning uses them).

use std::path::Path;

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder};

/// Special tokens, in id order: end of text (the document separator), padding, and the two
/// ChatML turn markers.
pub const SPECIAL: [&str; 4] = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"];
pub const EOT: u32 = 0;
pub const PAD: u32 = 1;
pub const IM_START: u32 = 2;
pub const IM_END: u32 = 3;

#[derive(Debug, thiserror::Error)]
#[error("tokenizer: {0}")]
pub struct TokenizerError(String);

fn err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError(e.to_string())
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Trains a byte-level BPE of at most `vocab_size` tokens on `texts`.
    pub fn train<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
    ) -> Result<Self, TokenizerError> {
        let byte_level = ByteLevel::new(false, true, true);
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(2)
            .special_tokens(SPECIAL.iter().map(|s| AddedToken::from(s.to_string(), true)).collect())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut inner = TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(byte_level))
            .with_post_processor(Some(byte_level))
            .with_decoder(Some(byte_level))
            .build()
            .map_err(err)?;
        inner.train(&mut trainer, texts).map_err(err)?;
        Ok(Self { inner: inner.into() })
    }

    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| err(format!("`{}`: {e}", path.display())))?;
        let t = Self { inner };
        for (id, s) in SPECIAL.iter().enumerate() {
            if t.inner.token_to_id(s) != Some(id as u32) {
                return Err(err(format!("`{}` does not reserve `{s}` as id {id}", path.display())));
            }
        }
        Ok(t)
    }

    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        self.inner.save(path, true).map_err(err)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, with no special tokens added around it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        Ok(self.inner.encode(text, false).map_err(err)?.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner.decode(ids, false).map_err(err)
    }

    /// How many bytes of text each token id stands for (0 for special tokens): byte-level
    /// BPE maps each byte to one symbol, so it is the symbol count of the token's string.
    pub fn byte_lengths(&self) -> Vec<u32> {
        (0..self.vocab_size() as u32)
            .map(|id| {
                if (id as usize) < SPECIAL.len() {
                    0
                } else {
                    self.inner.id_to_token(id).map_or(0, |t| t.chars().count() as u32)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trained() -> Tokenizer {
        let corpus = ["hello world, hello there", "the quick brown fox", "你好 世界 🦀 crab", "a  b\r\nc  d"];
        let texts: Vec<String> = (0..50).flat_map(|_| corpus.iter().map(|s| s.to_string())).collect();
        Tokenizer::train(texts.into_iter(), 400).unwrap()
    }

    #[test]
    fn round_trips_exactly_and_encodes_every_byte() {
        let t = trained();
        for s in [
            "",
            "hello",
            "  lead",
            "trail  ",
            "a  b\r\nc",
            "你好世界",
            "🦀🦀 emoji",
            "e\u{301}",
            "\0\x01\x7f",
            "<|im_end|>x",
        ] {
            let ids = t.encode(s).unwrap();
            assert_eq!(t.decode(&ids).unwrap(), s, "{s:?} → {ids:?}");
        }
        // Text whose UTF-8 contains every byte value valid UTF-8 can hold (all but C0, C1 and
        // F5..FF) round-trips: the 256 byte symbols are in the alphabet, so nothing is unknown.
        let mut all: String = (0u32..0x800).filter_map(char::from_u32).collect();
        all.extend(
            (0u32..16)
                .map(|i| if i == 0 { 0x800 } else { i << 12 })
                .chain([0x10000, 0x40000, 0x80000, 0xC0000, 0x100000])
                .filter_map(char::from_u32),
        );
        let bytes: std::collections::HashSet<u8> = all.bytes().collect();
        assert_eq!(bytes.len(), 256 - 13);
        assert_eq!(t.decode(&t.encode(&all).unwrap()).unwrap(), all);
        assert!(t.vocab_size() <= 400);
    }

    #[test]
    fn special_tokens_have_fixed_ids_and_the_file_reloads_identically() {
        let t = trained();
        assert_eq!(t.encode("<|im_start|>").unwrap(), vec![IM_START]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        t.save(&path).unwrap();
        let back = Tokenizer::load(&path).unwrap();
        let s = "the quick brown fox says 你好";
        assert_eq!(back.encode(s).unwrap(), t.encode(s).unwrap());
        let lengths = t.byte_lengths();
        let ids = t.encode("hello world").unwrap();
        assert_eq!(ids.iter().map(|&i| lengths[i as usize]).sum::<u32>(), 11);
    }

    #[test]
    fn training_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        trained().save(&dir.path().join("a.json")).unwrap();
        trained().save(&dir.path().join("b.json")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a.json")).unwrap(),
            std::fs::read(dir.path().join("b.json")).unwrap()
        );
    }
}
