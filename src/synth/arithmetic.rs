//! Arithmetic worksheet lines, always correct: mixed drills, times tables and runs such as
//! "23 + 1 = 24", "23 + 2 = 25", in symbols or in words.

use std::fmt::Write;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::text::fill;

#[derive(Clone, Copy)]
enum Op {
    Add,
    Subtract,
    Multiply,
    Divide,
}

/// Worksheet lines: mixed drills, times tables and runs such as "23 + 1 = 24", "23 + 2 = 25".
pub(super) fn arithmetic(rng: &mut ChaCha8Rng) -> String {
    fill(rng, "\n", |rng| {
        let in_words = rng.random_bool(0.5);
        match rng.random_range(0..5) {
            0 => {
                let k = rng.random_range(2..=12);
                (1..=10).map(|i| equation(k, Op::Multiply, i, in_words)).collect()
            }
            1 => {
                let a = rng.random_range(0..=90);
                (1..=rng.random_range(4..=9)).map(|b| equation(a, Op::Add, b, in_words)).collect()
            }
            _ => (0..rng.random_range(3..=6)).map(|_| drill(rng)).collect(),
        }
    })
}

/// One random equation with small operands, in symbols or words.
fn drill(rng: &mut ChaCha8Rng) -> String {
    let in_words = rng.random_bool(0.5);
    match rng.random_range(0..4) {
        0 => equation(rng.random_range(0..100), Op::Add, rng.random_range(0..100), in_words),
        1 => {
            let a = rng.random_range(0..100);
            equation(a, Op::Subtract, rng.random_range(0..=a), in_words)
        }
        2 => equation(rng.random_range(0..=12), Op::Multiply, rng.random_range(0..=12), in_words),
        _ => {
            // Built from the quotient so that every division is exact.
            let (divisor, quotient) = (rng.random_range(1..=12), rng.random_range(0..=12));
            equation(divisor * quotient, Op::Divide, divisor, in_words)
        }
    }
}

/// "17 + 25 = 42." or "17 plus 25 is 42."; callers keep subtraction non-negative and division
/// exact.
fn equation(a: u32, op: Op, b: u32, in_words: bool) -> String {
    let (symbol, word, result) = match op {
        Op::Add => ("+", "plus", a + b),
        Op::Subtract => ("-", "minus", a - b),
        Op::Multiply => ("*", "times", a * b),
        Op::Divide => ("/", "divided by", a / b),
    };
    // Sized up front: letting `format!` grow the line took most of the time spent on arithmetic.
    let mut line = String::with_capacity(32);
    let written = if in_words {
        write!(line, "{a} {word} {b} is {result}.")
    } else {
        write!(line, "{a} {symbol} {b} = {result}.")
    };
    written.expect("writing to a String cannot fail");
    line
}

/// Checks one worksheet line or problem, in symbols or words, for the tests of arithmetic and
/// of problems.
#[cfg(test)]
pub(super) fn check_equation(line: &str) {
    let number = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("`{s}` in {line:?} is not a number"));
    let tokens: Vec<&str> =
        line.strip_suffix('.').unwrap_or_else(|| panic!("{line:?} has no full stop")).split(' ').collect();
    let (a, op, b, result) = match tokens[..] {
        [a, op, b, "=", c] => (number(a), op, number(b), number(c)),
        [a, "divided", "by", b, "is", c] => (number(a), "/", number(b), number(c)),
        [a, "plus", b, "is", c] => (number(a), "+", number(b), number(c)),
        [a, "minus", b, "is", c] => (number(a), "-", number(b), number(c)),
        [a, "times", b, "is", c] => (number(a), "*", number(b), number(c)),
        _ => panic!("unrecognised line {line:?}"),
    };
    let expected = match op {
        "+" => a + b,
        "-" => a.checked_sub(b).unwrap_or_else(|| panic!("negative result in {line:?}")),
        "*" => a * b,
        "/" => {
            assert!(b != 0 && a % b == 0, "inexact division in {line:?}");
            a / b
        }
        _ => panic!("unknown operator in {line:?}"),
    };
    assert_eq!(result, expected, "{line:?}");
}
