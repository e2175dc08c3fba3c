# Sourced by bench/report.sh and bench/trust.sh: where things are (`here`, `root`, `out`), a
# release build (`flow`), and a scratch directory (`work`) removed on exit.
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
root=$(dirname "$here")
out="$here/out"
mkdir -p "$out"
cargo build --release --manifest-path "$root/Cargo.toml" >/dev/null
flow="$root/target/release/flow"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CI=1
