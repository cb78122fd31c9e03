//! The pure core stays pure: `events/src/domain` and `events/src/codec` name no I/O crate and
//! read no clock or randomness (docs/ARCHITECTURE.md). A grep, so it fails on the first offending
//! line.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "sqlx",
    "async_nats",
    "tokio",
    "axum",
    "reqwest",
    "std::net",
    "std::fs",
    "SystemTime",
    "Utc::now",
    "Instant::now",
    "new_v4",
    "rand::",
];

fn check_dir(dir: &Path, offences: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            check_dir(&path, offences);
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in FORBIDDEN {
                if code.contains(word) {
                    offences.push(format!("{}:{}: {word}", path.display(), n + 1));
                }
            }
        }
    }
}

#[test]
fn domain_and_codec_do_no_io_and_read_no_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offences = Vec::new();
    check_dir(&root.join("domain"), &mut offences);
    check_dir(&root.join("codec"), &mut offences);
    assert!(
        offences.is_empty(),
        "the pure core does I/O:\n{}",
        offences.join("\n")
    );
}
