//! The configuration file of `replscope proxy --config FILE`: several routes in one process, in TOML.
//!
//! ```toml
//! http = "127.0.0.1:9190"          # one API and /metrics for every route
//! log-format = "json"              # text or json
//! buffer = "1MiB"                  # defaults for every route ...
//! max-links = 1024
//! forget-after = "10m"
//!
//! [[route]]
//! name = "main"                    # the `route` label
//! master = "10.0.0.5:6379"
//! listen = "127.0.0.1:6380"
//! assume-output-buffer-limit = "256mb 64mb 60"   # ... and, per route, the `--assume-*` settings
//! assume-repl-timeout = "60s"
//! assume-backlog = "64mb"
//! buffer = "1MiB"                  # and any default, overridden
//! introspect = true                # ask the master for its settings and the replicas' output buffers,
//! master-auth-user = "replscope"   # as this ACL user, whose password is in this environment variable
//! master-auth-password-env = "REPLSCOPE_MAIN_PASSWORD"
//! ```
//!
//! Keys are the flags' names. A mistake is reported as one line naming the file, the line and the key
//! ([`ConfigError`]); nothing of a file with a mistake is used.

pub mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::introspect::Introspection;
use crate::link::settings::ServerSettings;
use crate::proxy::RouteConfig;

/// `--buffer`'s default: 1MiB (the largest buffer a busy direction borrows; see `proxy::pool`).
pub const DEFAULT_BUFFER: usize = 1 << 20;
/// `--max-links`' default.
pub const DEFAULT_MAX_LINKS: usize = 1024;
/// `--forget-after`'s default: 10m.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(10 * 60);

/// A configuration file, read and checked.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// `http`, if the file sets it.
    pub http: Option<String>,
    /// `log-format` (`text` or `json`), if the file sets it.
    pub log_format: Option<String>,
    /// `enable-faults`, if the file sets it.
    pub enable_faults: Option<bool>,
    /// The routes, in the file's order.
    pub routes: Vec<RouteConfig>,
}

/// What is wrong with a configuration file, on one line: `FILE, line N: KEY: what`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}{}{}: {message}",
    path.display(),
    line.map(|l| format!(", line {l}")).unwrap_or_default(),
    if key.is_empty() { String::new() } else { format!(": {key}") }
)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// The line (1-based), where there is one.
    pub line: Option<usize>,
    /// The key, dotted as TOML spells it (`route.master`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    http: Option<Spanned<String>>,
    log_format: Option<Spanned<String>>,
    enable_faults: Option<bool>,
    buffer: Option<Spanned<String>>,
    max_links: Option<Spanned<i64>>,
    forget_after: Option<Spanned<String>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRoute {
    name: Spanned<String>,
    master: Spanned<String>,
    listen: Spanned<String>,
    buffer: Option<Spanned<String>>,
    max_links: Option<Spanned<i64>>,
    forget_after: Option<Spanned<String>>,
    assume_output_buffer_limit: Option<Spanned<String>>,
    assume_repl_timeout: Option<Spanned<String>>,
    assume_backlog: Option<Spanned<String>>,
    introspect: Option<bool>,
    master_auth_user: Option<Spanned<String>>,
    master_auth_password_env: Option<Spanned<String>>,
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: None,
        key: String::new(),
        message: format!("cannot read it: {e}"),
    })?;
    parse(&text, path)
}

/// Checks the text of a configuration file (`path` names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    let file = File { text, path };
    let raw: RawFile = toml::from_str(text).map_err(|e| file.toml_error(&e))?;
    let buffer = file.optional(raw.buffer.as_ref(), "buffer", values::buffer)?.unwrap_or(DEFAULT_BUFFER);
    let max_links = match &raw.max_links {
        Some(n) => file.max_links(n, "max-links")?,
        None => DEFAULT_MAX_LINKS,
    };
    let forget_after =
        file.optional(raw.forget_after.as_ref(), "forget-after", values::forget_after)?.unwrap_or(DEFAULT_FORGET_AFTER);
    let http = file.optional(raw.http.as_ref(), "http", values::listen)?;
    let log_format = match &raw.log_format {
        Some(f) if matches!(f.get_ref().as_str(), "text" | "json") => Some(f.get_ref().clone()),
        Some(f) => return Err(file.at(f.span().start, "log-format", format!("{:?} is not text or json", f.get_ref()))),
        None => None,
    };
    if raw.route.is_empty() {
        return Err(ConfigError {
            path: path.to_path_buf(),
            line: None,
            key: "route".into(),
            message: "no [[route]]: the file must declare at least one (name, master, listen)".into(),
        });
    }
    let mut routes: Vec<RouteConfig> = Vec::new();
    for r in &raw.route {
        let r = r.get_ref();
        let name = r.name.get_ref().trim();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(file.at(
                r.name.span().start,
                "route.name",
                "a route needs a name (printable, not empty)".into(),
            ));
        }
        if routes.iter().any(|o| o.name == name) {
            return Err(file.at(r.name.span().start, "route.name", format!("{name:?} names two routes")));
        }
        let listen = file.check(&r.listen, "route.listen", values::listen)?;
        let any_port = listen.ends_with(":0");
        if let Some(other) = routes.iter().find(|o| o.listen == listen && !any_port) {
            return Err(file.at(
                r.listen.span().start,
                "route.listen",
                format!("{listen} is already route {:?}'s", other.name),
            ));
        }
        if http.as_deref() == Some(listen.as_str()) && !any_port {
            return Err(file.at(r.listen.span().start, "route.listen", format!("{listen} is also the http address")));
        }
        let forget =
            file.optional(r.forget_after.as_ref(), "route.forget-after", values::forget_after)?.unwrap_or(forget_after);
        let password = match &r.master_auth_password_env {
            Some(var) if !values::looks_like_env_name(var.get_ref()) => {
                // Not a variable's name: perhaps the password itself, so it is not repeated.
                return Err(file.at(
                    var.span().start,
                    "route.master-auth-password-env",
                    "is not the name of an environment variable (NAME_LIKE_THIS), and is not shown in case it is \
                     the password: put the password in a variable and name the variable here"
                        .into(),
                ));
            }
            Some(var) => match std::env::var(var.get_ref()) {
                Ok(p) if !p.is_empty() => Some(p),
                _ => {
                    return Err(file.at(
                        var.span().start,
                        "route.master-auth-password-env",
                        format!("the environment variable {} is not set", var.get_ref()),
                    ));
                }
            },
            None => None,
        };
        let introspect = Introspection::from_parts(
            r.introspect.unwrap_or(false),
            r.master_auth_user.as_ref().map(|u| u.get_ref().clone()),
            password,
        )
        .map_err(|e| {
            let at = r.master_auth_user.as_ref().map_or(r.name.span().start, |u| u.span().start);
            file.at(at, "route.master-auth-user", e)
        })?;
        routes.push(RouteConfig {
            name: name.to_string(),
            master: file.check(&r.master, "route.master", values::master)?,
            listen,
            buffer: file.optional(r.buffer.as_ref(), "route.buffer", values::buffer)?.unwrap_or(buffer),
            max_links: match &r.max_links {
                Some(n) => file.max_links(n, "route.max-links")?,
                None => max_links,
            },
            forget_after: (!forget.is_zero()).then_some(forget),
            introspect,
            settings: ServerSettings {
                output_buffer_limit: file.optional(
                    r.assume_output_buffer_limit.as_ref(),
                    "route.assume-output-buffer-limit",
                    values::output_buffer_limit,
                )?,
                repl_timeout: file.optional(
                    r.assume_repl_timeout.as_ref(),
                    "route.assume-repl-timeout",
                    values::repl_timeout,
                )?,
                backlog: file.optional(r.assume_backlog.as_ref(), "route.assume-backlog", values::backlog)?,
                master: Default::default(),
            },
        });
    }
    Ok(FileConfig { http, log_format, enable_faults: raw.enable_faults, routes })
}

/// The text being checked, to turn byte offsets into lines and keys.
struct File<'a> {
    text: &'a str,
    path: &'a Path,
}

impl File<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())].iter().filter(|b| **b == b'\n').count() + 1
    }

    fn at(&self, offset: usize, key: &str, message: String) -> ConfigError {
        ConfigError { path: self.path.to_path_buf(), line: Some(self.line_of(offset)), key: key.to_string(), message }
    }

    fn check<T>(&self, v: &Spanned<String>, key: &str, parse: fn(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        parse(v.get_ref()).map_err(|m| self.at(v.span().start, key, m))
    }

    fn optional<T>(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        v.map(|v| self.check(v, key, parse)).transpose()
    }

    fn max_links(&self, n: &Spanned<i64>, key: &str) -> Result<usize, ConfigError> {
        usize::try_from(*n.get_ref()).ok().filter(|n| *n >= 1).ok_or_else(|| {
            self.at(n.span().start, key, format!("{} is not a number of links (1 or more)", n.get_ref()))
        })
    }

    /// A TOML or schema error, with the key it is about: the one the message names (a missing or
    /// unknown field), else the one written on its line, under the table the line is in.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim().to_string();
        let offset = e.span().map_or(0, |s| s.start);
        let line = self.line_of(offset);
        let table = self.table_at(line);
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        let written =
            self.text.lines().nth(line - 1).and_then(|l| l.split_once('=')).map(|(k, _)| k.trim().to_string());
        let key = match (named.or(written), table) {
            (Some(k), Some(t)) => format!("{t}.{k}"),
            (Some(k), None) => k,
            (None, Some(t)) => t,
            (None, None) => "(syntax)".into(),
        };
        ConfigError { path: self.path.to_path_buf(), line: e.span().map(|_| line), key, message }
    }

    /// The table a line is in (`route` for `[[route]]`), if any.
    fn table_at(&self, line: usize) -> Option<String> {
        self.text.lines().take(line).filter_map(|l| header(l.trim())).last()
    }
}

/// The name of a table header line (`[x]` or `[[x]]`).
fn header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?.trim_start_matches('[');
    Some(inner.split(']').next().unwrap_or(inner).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<FileConfig, String> {
        parse(text, Path::new("r.toml")).map_err(|e| e.to_string())
    }

    const TWO: &str = r#"
http = "127.0.0.1:9190"
buffer = "1MiB"

[[route]]
name = "a"
master = "10.0.0.5:6379"
listen = "127.0.0.1:6380"
assume-output-buffer-limit = "8mb 4mb 5"

[[route]]
name = "b"
master = "[::1]:6379"
listen = "127.0.0.1:6381"
buffer = "64KiB"
forget-after = "0"
"#;

    #[test]
    fn two_routes_with_defaults_and_overrides() {
        let c = check(TWO).expect("valid");
        assert_eq!(c.http.as_deref(), Some("127.0.0.1:9190"));
        let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!((c.routes[0].buffer, c.routes[1].buffer), (1 << 20, 64 << 10));
        assert!(c.routes[0].settings.output_buffer_limit.is_some());
        assert!(c.routes[1].settings.output_buffer_limit.is_none());
        assert_eq!(c.routes[0].forget_after, Some(Duration::from_secs(600)));
        assert_eq!(c.routes[1].forget_after, None);
        assert_eq!(c.routes[0].max_links, DEFAULT_MAX_LINKS);
    }

    #[test]
    fn the_example_in_deploy_is_valid() {
        let c = parse(include_str!("../../deploy/replscope.toml"), Path::new("deploy/replscope.toml")).expect("valid");
        let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["sessions", "cache"]);
        assert_eq!(c.log_format.as_deref(), Some("json"));
        assert!(c.routes[0].settings.output_buffer_limit.is_some() && c.routes[0].settings.backlog.is_some());
        assert!(c.routes[0].introspect.is_some());
        assert_eq!(c.routes[1].buffer, 1 << 20);
    }

    #[test]
    fn introspection_per_route_with_its_password_from_the_environment() {
        let route =
            |extra: &str| format!("[[route]]\nname = \"a\"\nmaster = \"h:1\"\nlisten = \"127.0.0.1:6380\"\n{extra}");
        let c = check(&route("introspect = true\n")).expect("valid");
        let on = c.routes[0].introspect.clone().expect("on");
        assert_eq!((on.user, on.password), (None, None));
        assert!(check(&route("")).expect("valid").routes[0].introspect.is_none());
        // PATH is set in every environment; its value stands in for a password, and never shows.
        let path = std::env::var("PATH").expect("PATH");
        let c = check(&route("master-auth-user = \"intro\"\nmaster-auth-password-env = \"PATH\"\n")).expect("valid");
        let auth = c.routes[0].introspect.clone().expect("on");
        assert_eq!(auth.user.as_deref(), Some("intro"));
        assert!(!format!("{c:?}").contains(&path));
        let unset = "master-auth-user = \"intro\"\nmaster-auth-password-env = \"REPLSCOPE_TEST_UNSET_PASSWORD\"\n";
        assert_eq!(
            check(&route(unset)).map(|_| ()),
            Err("r.toml, line 6: route.master-auth-password-env: the environment variable REPLSCOPE_TEST_UNSET_PASSWORD is not set".into())
        );
        let no_password = check(&route("master-auth-user = \"intro\"\n")).map(|_| ());
        assert!(
            no_password
                .is_err_and(|e| e.starts_with("r.toml, line 5: route.master-auth-user: a master-auth-user needs"))
        );
    }

    #[test]
    fn a_password_where_the_variable_name_belongs_is_refused_without_being_repeated() {
        let route = |var: &str| {
            format!(
                "[[route]]\nname = \"a\"\nmaster = \"h:1\"\nlisten = \"127.0.0.1:6380\"\nmaster-auth-user = \"intro\"\n\
                 master-auth-password-env = \"{var}\"\n"
            )
        };
        for secret in ["s3cr3t-Pa55!", "hunter2", "correct horse battery staple"] {
            let e = check(&route(secret)).map(|_| ()).expect_err("refused");
            assert!(!e.contains(secret), "{e}");
            assert!(e.starts_with("r.toml, line 6: route.master-auth-password-env: is not the name of"), "{e}");
        }
    }

    #[test]
    fn each_mistake_names_the_line_and_the_key() {
        const ROUTE: &str = "[[route]]\nname = \"a\"\nmaster = \"h:1\"\nlisten = \"127.0.0.1:6380\"\n";
        let cases: &[(&str, &str)] = &[
            (
                "[[route]]\nname = \"a\"\nmaster = \"10.0.0.5\"\nlisten = \"127.0.0.1:6380\"\n",
                "r.toml, line 3: route.master: 10.0.0.5 has no port",
            ),
            (
                "[[route]]\nname = \"a\"\nlisten = \"127.0.0.1:6380\"\n",
                "r.toml, line 1: route.master: missing field `master`",
            ),
            (
                "[[route]]\nname = \"a\"\nmaster = \"h:1\"\nlisten = \"127.0.0.1:6380\"\nasume-backlog = \"1mb\"\n",
                "r.toml, line 5: route.asume-backlog: unknown field `asume-backlog`",
            ),
            ("htp = \"x\"\n", "r.toml, line 1: htp: unknown field `htp`"),
            ("max-links = \"many\"\n", "r.toml, line 1: max-links: invalid type: string \"many\", expected i64"),
            (&format!("max-links = 0\n{ROUTE}"), "r.toml, line 1: max-links: 0 is not a number of links"),
            ("http = \n", "r.toml, line 1: http: "),
            ("", "r.toml: route: no [[route]]"),
            ("[[route]\nname = \"a\"\n", "r.toml, line 1: route: "),
            (
                "[[route]]\nname = \"a\"\nmaster = \"h:1\"\nlisten = \"127.0.0.1:6380\"\n[[route]]\nname = \"a\"\nmaster = \"h:2\"\nlisten = \"127.0.0.1:6381\"\n",
                "r.toml, line 6: route.name: \"a\" names two routes",
            ),
            (
                "[[route]]\nname = \"a\"\nmaster = \"h:1\"\nlisten = \"127.0.0.1:6380\"\n[[route]]\nname = \"b\"\nmaster = \"h:2\"\nlisten = \"127.0.0.1:6380\"\n",
                "r.toml, line 8: route.listen: 127.0.0.1:6380 is already route \"a\"'s",
            ),
            (
                "[[route]]\nname = \"a\"\nmaster = \"h:1\"\nlisten = \"127.0.0.1:6380\"\nassume-repl-timeout = \"10ms\"\n",
                "r.toml, line 5: route.assume-repl-timeout: 10ms is shorter than a second",
            ),
            (&format!("log-format = \"yaml\"\n{ROUTE}"), "r.toml, line 1: log-format: \"yaml\" is not text or json"),
        ];
        for (text, want) in cases {
            let got = check(text).expect_err(want);
            assert!(got.starts_with(want), "{text:?}\n got {got}\nwant {want}");
            assert!(!got.contains('\n'), "one line: {got:?}");
        }
    }
}
