//! Where S3 settings come from: the standard AWS environment variables (read by object_store
//! itself), then the AWS config and credentials files for whatever they leave unset.

use std::path::{Path, PathBuf};

/// S3 settings from the AWS config and credentials files, for what the environment leaves
/// unset (the environment wins, as in the AWS CLI): the profile's access key, secret and session
/// token from `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`), and its `region` and
/// `endpoint_url` from `AWS_CONFIG_FILE` (default `~/.aws/config`). The profile is
/// `AWS_PROFILE`, else `default`.
pub(super) fn aws_settings() -> Vec<(String, String)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let home = env("HOME").map(PathBuf::from).unwrap_or_default();
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let credentials =
        env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from).unwrap_or_else(|| home.join(".aws/credentials"));
    let config = env("AWS_CONFIG_FILE").map(PathBuf::from).unwrap_or_else(|| home.join(".aws/config"));
    let section = |file: &Path, name: &str| -> Vec<(String, String)> {
        let Ok(ini) = ini::Ini::load_from_file(file) else { return Vec::new() };
        ini.section(Some(name))
            .map(|s| s.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
            .unwrap_or_default()
    };
    let config_section = if profile == "default" { "default".to_owned() } else { format!("profile {profile}") };
    let mut out = Vec::new();
    let wanted = [
        (&credentials, profile.as_str(), "aws_access_key_id", "AWS_ACCESS_KEY_ID"),
        (&credentials, profile.as_str(), "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        (&credentials, profile.as_str(), "aws_session_token", "AWS_SESSION_TOKEN"),
        (&config, config_section.as_str(), "region", "AWS_REGION"),
        (&config, config_section.as_str(), "endpoint_url", "AWS_ENDPOINT_URL"),
    ];
    for (file, name, key, var) in wanted {
        let already = env(var).is_some() || (var == "AWS_REGION" && env("AWS_DEFAULT_REGION").is_some());
        if already {
            continue;
        }
        if let Some((_, v)) = section(file, name).into_iter().find(|(k, _)| k == key) {
            out.push((format!("aws_{}", key.trim_start_matches("aws_")), v));
        }
    }
    out
}
