//! `SHOW GRANTS` lines, read with MySQL's quoting rules and written back with keyturn's.
//!
//! A grant line is server output, but what is inside its quotes is not: a user who may
//! set their own `REQUIRE SUBJECT`, or name a database or role, chooses those bytes. So
//! nothing of a line is copied as text: it is split into tokens (words, quoted strings,
//! quoted identifiers, punctuation), its grantee is checked, and the statement that
//! copies it is rebuilt from those tokens, every string and identifier quoted here.
//! Authentication and TLS clauses are dropped (the clone gets its own); of the options
//! after the grantee only `WITH GRANT OPTION`, `WITH ADMIN OPTION` and resource limits
//! are kept.
//!
//! Sessions run with a fixed sql_mode, without `ANSI_QUOTES` and `NO_BACKSLASH_ESCAPES`
//! (see `MysqlBackend::connect`), so backslashes escape in strings, as here, and a `"`
//! outside a string means the line was printed under other rules: it is refused.

use super::literal;

/// One token of a grant line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A keyword, a privilege name or a number: `[A-Za-z0-9_$]+`, or `*`.
    Word(String),
    /// A `'…'` string, unescaped.
    Str(String),
    /// A `` `…` `` identifier, unescaped.
    Ident(String),
    /// One of `, . ( ) @`.
    Punct(char),
}

impl Token {
    fn is_word(&self, word: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(word))
    }

    /// The value of a name part (user, host, role): quoted or bare.
    fn name(&self) -> Option<&str> {
        match self {
            Token::Str(s) | Token::Ident(s) | Token::Word(s) => Some(s),
            Token::Punct(_) => None,
        }
    }
}

/// Splits a line into tokens; anything outside the grammar of `SHOW GRANTS` output (an
/// unterminated quote, a `;`, a comment) is an error, never guessed at.
fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            ',' | '.' | '(' | ')' | '@' => tokens.push(Token::Punct(c)),
            '*' => tokens.push(Token::Word("*".into())),
            // Sessions run without ANSI_QUOTES, so a server prints `"` only inside a string.
            '"' => return Err("double-quoted text (ANSI_QUOTES) is not expected".into()),
            '\'' => {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated string".into()),
                        Some('\\') => match chars.next() {
                            None => return Err("unterminated string".into()),
                            Some('0') => value.push('\0'),
                            Some('n') => value.push('\n'),
                            Some('r') => value.push('\r'),
                            Some('t') => value.push('\t'),
                            Some('b') => value.push('\u{8}'),
                            Some('Z') => value.push('\u{1a}'),
                            Some(other) => value.push(other),
                        },
                        Some(q) if q == c => match chars.peek() {
                            Some(&next) if next == c => {
                                chars.next();
                                value.push(c);
                            }
                            _ => break,
                        },
                        Some(other) => value.push(other),
                    }
                }
                tokens.push(Token::Str(value));
            }
            '`' => {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated identifier".into()),
                        Some('`') if chars.peek() == Some(&'`') => {
                            chars.next();
                            value.push('`');
                        }
                        Some('`') => break,
                        Some(other) => value.push(other),
                    }
                }
                tokens.push(Token::Ident(value));
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '$' => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_ascii_alphanumeric() || next == '_' || next == '$' {
                        word.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(tokens)
}

/// An identifier as keyturn writes it: backticks, a backtick doubled.
pub fn identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// What a grant line does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// `GRANT … TO account`: privileges (with `ON`) or roles.
    Grant,
    /// `REVOKE … ON … FROM account`: a partial revoke (MySQL 8's `partial_revokes`).
    Revoke,
    /// `SET DEFAULT ROLE … FOR account`.
    DefaultRole,
}

/// A parsed `SHOW GRANTS` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantLine {
    pub kind: GrantKind,
    /// Everything between the leading verb and the grantee keyword (`TO`, `FROM`, `FOR`).
    body: Vec<Token>,
    /// The grantee's user and host parts.
    pub grantee: (String, String),
    /// The options kept: `WITH GRANT OPTION`, `WITH ADMIN OPTION`, resource limits,
    /// already rendered from validated words and numbers.
    options: Vec<String>,
}

/// Resource limits `SHOW GRANTS` may list after `WITH`; each takes a number.
const RESOURCE_LIMITS: [&str; 5] = [
    "MAX_QUERIES_PER_HOUR",
    "MAX_UPDATES_PER_HOUR",
    "MAX_CONNECTIONS_PER_HOUR",
    "MAX_USER_CONNECTIONS",
    "MAX_STATEMENT_TIME",
];

impl GrantLine {
    /// Parses one line. The error says what did not fit; such a line is not copied.
    pub fn parse(line: &str) -> Result<GrantLine, String> {
        let tokens = tokenize(line)?;
        let (kind, verb_len, keyword) = if tokens.first().is_some_and(|t| t.is_word("GRANT")) {
            (GrantKind::Grant, 1, "TO")
        } else if tokens.first().is_some_and(|t| t.is_word("REVOKE")) {
            (GrantKind::Revoke, 1, "FROM")
        } else if tokens.len() > 3
            && tokens[0].is_word("SET")
            && tokens[1].is_word("DEFAULT")
            && tokens[2].is_word("ROLE")
        {
            (GrantKind::DefaultRole, 3, "FOR")
        } else {
            return Err("not a GRANT, REVOKE or SET DEFAULT ROLE line".into());
        };
        // Quoted text is a single token, so the first bare keyword is the real one.
        let at =
            tokens.iter().position(|t| t.is_word(keyword)).ok_or_else(|| format!("no {keyword} before the grantee"))?;
        let body = tokens[verb_len..at].to_vec();
        if body.is_empty() {
            return Err("nothing granted".into());
        }
        let (user, host, rest) = match &tokens[at + 1..] {
            [user, Token::Punct('@'), host, rest @ ..] => (user, host, rest),
            _ => return Err("the grantee is not a user@host account".into()),
        };
        let grantee = match (user.name(), host.name()) {
            (Some(u), Some(h)) => (u.to_owned(), h.to_owned()),
            _ => return Err("the grantee is not a user@host account".into()),
        };
        Ok(GrantLine { kind, body, grantee, options: options(rest)? })
    }

    /// Whether this line grants `PROXY`.
    pub fn is_proxy(&self) -> bool {
        self.kind == GrantKind::Grant && self.body.first().is_some_and(|t| t.is_word("PROXY"))
    }

    /// Roles this line grants (`GRANT role[, role] TO …`, no `ON`).
    pub fn granted_roles(&self) -> Vec<&str> {
        if self.kind != GrantKind::Grant || self.body.iter().any(|t| t.is_word("ON")) {
            return Vec::new();
        }
        self.body.iter().filter(|t| !matches!(t, Token::Punct(_))).filter_map(Token::name).collect()
    }

    /// The default role a `SET DEFAULT ROLE` line sets (`None` for `NONE`).
    pub fn default_role(&self) -> Option<&str> {
        match (self.kind, self.body.as_slice()) {
            (GrantKind::DefaultRole, [Token::Word(w)]) if w.eq_ignore_ascii_case("NONE") => None,
            (GrantKind::DefaultRole, [role]) => role.name(),
            _ => None,
        }
    }

    /// The statement that gives `to` what this line gives its grantee, built only from
    /// keyturn's own quoting.
    pub fn render_for(&self, to: (&str, &str)) -> String {
        let (verb, keyword) = match self.kind {
            GrantKind::Grant => ("GRANT", "TO"),
            GrantKind::Revoke => ("REVOKE", "FROM"),
            GrantKind::DefaultRole => ("SET DEFAULT ROLE", "FOR"),
        };
        let mut out = format!("{verb} {} {keyword} {}@{}", render(&self.body), literal(to.0), literal(to.1));
        for option in &self.options {
            out.push(' ');
            out.push_str(option);
        }
        out
    }
}

/// Tokens written back: identifiers and strings re-quoted, no space around `.` and `@`,
/// none inside parentheses' edges.
fn render(tokens: &[Token]) -> String {
    let mut out = String::new();
    let mut glue = true;
    for token in tokens {
        let text = match token {
            Token::Word(w) => w.clone(),
            Token::Str(s) => literal(s),
            Token::Ident(i) => identifier(i),
            Token::Punct(p) => p.to_string(),
        };
        let tight = matches!(token, Token::Punct('.' | '@' | ',' | ')'));
        if !out.is_empty() && !glue && !tight {
            out.push(' ');
        }
        out.push_str(&text);
        glue = matches!(token, Token::Punct('.' | '@' | '('));
    }
    out
}

/// The options after the grantee worth copying. Everything else there (`IDENTIFIED …`,
/// `REQUIRE …`, `PASSWORD EXPIRE …`) describes the account, which keyturn sets itself.
fn options(rest: &[Token]) -> Result<Vec<String>, String> {
    let mut kept = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        if rest[i].is_word("WITH") {
            let mut j = i + 1;
            loop {
                match (rest.get(j), rest.get(j + 1)) {
                    (Some(a), Some(b)) if (a.is_word("GRANT") || a.is_word("ADMIN")) && b.is_word("OPTION") => {
                        let which = if a.is_word("GRANT") { "GRANT" } else { "ADMIN" };
                        kept.push(format!("WITH {which} OPTION"));
                        j += 2;
                    }
                    (Some(Token::Word(limit)), Some(Token::Word(number)))
                        if RESOURCE_LIMITS.iter().any(|l| l.eq_ignore_ascii_case(limit)) =>
                    {
                        let mut value = number.clone();
                        j += 2;
                        // MAX_STATEMENT_TIME is a decimal: `1.500000` arrives as three tokens.
                        if let (Some(Token::Punct('.')), Some(Token::Word(fraction))) = (rest.get(j), rest.get(j + 1)) {
                            value = format!("{value}.{fraction}");
                            j += 2;
                        }
                        if !value.chars().all(|c| c.is_ascii_digit() || c == '.') {
                            return Err(format!("resource limit {limit} is not a number"));
                        }
                        kept.push(format!("WITH {} {value}", limit.to_ascii_uppercase()));
                    }
                    _ => break,
                }
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(line: &str) -> Result<String, String> {
        let parsed = GrantLine::parse(line)?;
        assert_eq!(parsed.grantee, ("app".to_owned(), "%".to_owned()), "{line}");
        Ok(parsed.render_for(("app_clone", "%")))
    }

    #[test]
    fn grant_lines_are_rebuilt_for_the_clone() {
        let cases = [
            (
                "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19' REQUIRE SSL",
                "GRANT USAGE ON *.* TO 'app_clone'@'%'",
            ),
            (
                "GRANT SELECT, INSERT ON `shop`.* TO `app`@`%` WITH GRANT OPTION",
                "GRANT SELECT, INSERT ON `shop`.* TO 'app_clone'@'%' WITH GRANT OPTION",
            ),
            (
                "GRANT SELECT (`id`), UPDATE (`name`, `x``y`) ON `shop`.`items` TO 'app'@'%'",
                "GRANT SELECT (`id`), UPDATE (`name`, `x``y`) ON `shop`.`items` TO 'app_clone'@'%'",
            ),
            ("GRANT `reader` TO `app`@`%`", "GRANT `reader` TO 'app_clone'@'%'"),
            ("GRANT `reader` TO `app`@`%` WITH ADMIN OPTION", "GRANT `reader` TO 'app_clone'@'%' WITH ADMIN OPTION"),
            ("SET DEFAULT ROLE `reader` FOR `app`@`%`", "SET DEFAULT ROLE `reader` FOR 'app_clone'@'%'"),
            ("REVOKE SELECT ON `mysql`.* FROM `app`@`%`", "REVOKE SELECT ON `mysql`.* FROM 'app_clone'@'%'"),
            (
                "GRANT USAGE ON *.* TO `app`@`%` WITH MAX_USER_CONNECTIONS 3 MAX_STATEMENT_TIME 1.500000",
                "GRANT USAGE ON *.* TO 'app_clone'@'%' WITH MAX_USER_CONNECTIONS 3 WITH MAX_STATEMENT_TIME 1.500000",
            ),
            (
                "GRANT PROXY ON ''@'%' TO 'app'@'%' WITH GRANT OPTION",
                "GRANT PROXY ON ''@'%' TO 'app_clone'@'%' WITH GRANT OPTION",
            ),
            (
                "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED WITH 'caching_sha2_password' AS '$A$005$x' WITH GRANT OPTION",
                "GRANT USAGE ON *.* TO 'app_clone'@'%' WITH GRANT OPTION",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(copy(line).as_deref(), Ok(expected), "{line}");
        }
    }

    #[test]
    fn hostile_text_inside_quotes_stays_inside_quotes() {
        // The attack: a REQUIRE SUBJECT whose text looks like the end of the grant.
        let hostile = [
            r"GRANT USAGE ON *.* TO `app`@`%` REQUIRE SUBJECT 'x WITH GRANT OPTION; GRANT ALL ON *.* TO evil@''%''; #'",
            r"GRANT USAGE ON *.* TO `app`@`%` REQUIRE ISSUER '\' WITH GRANT OPTION; DROP USER root; -- ' CIPHER 'a'",
            r"GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED VIA ed25519 USING 'a'' WITH ADMIN OPTION; GRANT ALL'",
            r"GRANT SELECT ON `db; DROP TABLE x; --`.* TO `app`@`%`",
        ];
        for line in hostile {
            let out = copy(line).unwrap();
            assert!(!out.contains("GRANT ALL") && !out.contains("DROP USER"), "{line} -> {out}");
            assert!(!out.contains("WITH GRANT OPTION") && !out.contains("WITH ADMIN OPTION"), "{line} -> {out}");
        }
        assert_eq!(
            copy(r"GRANT SELECT ON `db; DROP TABLE x; --`.* TO `app`@`%`").unwrap(),
            "GRANT SELECT ON `db; DROP TABLE x; --`.* TO 'app_clone'@'%'"
        );
        // A grantee named inside a quoted value is not the grantee.
        let line = r"GRANT USAGE ON *.* TO `bob`@`%` REQUIRE SUBJECT ' TO `app`@`%`'";
        assert_eq!(GrantLine::parse(line).unwrap().grantee, ("bob".into(), "%".into()));
    }

    #[test]
    fn lines_outside_the_grammar_are_refused() {
        for line in [
            "GRANT USAGE ON *.* TO `app`@`%`; DROP USER x",
            "GRANT USAGE ON *.* TO 'app'@'%' REQUIRE SUBJECT 'unterminated",
            "GRANT USAGE ON *.* TO `app",
            "DROP USER `app`@`%`",
            "GRANT USAGE ON *.* TO `app`",
            "GRANT USAGE ON *.* TO `app`@`%` WITH MAX_USER_CONNECTIONS x1",
            "GRANT SELECT ON t TO `app`@`%` # comment",
        ] {
            assert!(GrantLine::parse(line).is_err(), "{line}");
        }
    }

    #[test]
    fn lines_printed_under_ansi_quotes_are_refused() {
        // Under ANSI_QUOTES identifiers come in double quotes, without backslash escapes:
        // read with string rules, `r\ole` would become `role`.
        for line in [
            r#"GRANT SELECT ON "shop".* TO "app"@"%""#,
            r#"GRANT "app_r\ole" TO "app"@"%""#,
            r#"GRANT USAGE ON *.* TO `app`@`%` REQUIRE SUBJECT "x"" TO `app`@`%` WITH GRANT OPTION""#,
        ] {
            assert!(GrantLine::parse(line).unwrap_err().contains("double-quoted"), "{line}");
        }
        // Inside a string a double quote is just a character.
        assert!(GrantLine::parse(r#"GRANT USAGE ON *.* TO `app`@`%` REQUIRE SUBJECT '"x"'"#).is_ok());
    }

    #[test]
    fn proxy_grants_are_recognised() {
        assert!(GrantLine::parse("GRANT PROXY ON ''@'%' TO 'app'@'%'").unwrap().is_proxy());
        assert!(!GrantLine::parse("GRANT SELECT ON *.* TO 'app'@'%'").unwrap().is_proxy());
    }

    #[test]
    fn names_with_quotes_and_backslashes_round_trip() {
        let line = r"GRANT SELECT ON `it's ``db`` \n`.* TO `o'brien ``x`` \\ é`@`%`";
        let parsed = GrantLine::parse(line).unwrap();
        assert_eq!(parsed.grantee, (r"o'brien `x` \\ é".to_owned(), "%".to_owned()));
        assert_eq!(
            parsed.render_for((r"o'brien \x", "%")),
            r"GRANT SELECT ON `it's ``db`` \n`.* TO 'o\'brien \\x'@'%'"
        );
    }

    #[test]
    fn roles_and_default_roles_are_read() {
        let roles = GrantLine::parse("GRANT `r1`, `r'2` TO `app`@`%`").unwrap();
        assert_eq!(roles.granted_roles(), vec!["r1", "r'2"]);
        assert!(GrantLine::parse("GRANT SELECT ON *.* TO `app`@`%`").unwrap().granted_roles().is_empty());
        assert_eq!(GrantLine::parse("SET DEFAULT ROLE `r'2` FOR `app`@`%`").unwrap().default_role(), Some("r'2"));
        assert_eq!(GrantLine::parse("SET DEFAULT ROLE NONE FOR `app`@`%`").unwrap().default_role(), None);
    }
}
