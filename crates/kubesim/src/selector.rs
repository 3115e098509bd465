//! Label and field selectors with the grammar of apimachinery's `labels/selector.go` and
//! `fields/selector.go`.
//!
//! Hand-written because no Rust crate parses the Kubernetes selector language on the server
//! side; kube-rs only renders selectors.

use crate::validation;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `k=v`, `k==v`
    Equals(String, String),
    /// `k!=v`: absent or different
    NotEquals(String, String),
    /// `k in (a,b)`
    In(String, BTreeSet<String>),
    /// `k notin (a,b)`: absent or none of them
    NotIn(String, BTreeSet<String>),
    /// `k`
    Exists(String),
    /// `!k`
    DoesNotExist(String),
    /// `k>5`
    GreaterThan(String, i64),
    /// `k<5`
    LessThan(String, i64),
}

/// A parsed label selector: all requirements must hold. Empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Not,
    NotEq,
    Eq,
    DoubleEq,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    Gt,
    Lt,
}

impl Tok {
    fn show(&self) -> String {
        match self {
            Tok::Ident(s) => s.clone(),
            Tok::Not => "!".into(),
            Tok::NotEq => "!=".into(),
            Tok::Eq => "=".into(),
            Tok::DoubleEq => "==".into(),
            Tok::In => "in".into(),
            Tok::NotIn => "notin".into(),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
            Tok::Comma => ",".into(),
            Tok::Gt => ">".into(),
            Tok::Lt => "<".into(),
        }
    }
}

fn lex(s: &str) -> Vec<Tok> {
    let special = |c: char| matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<');
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if special(c) {
            let next = chars.get(i + 1).copied();
            let (tok, len) = match (c, next) {
                ('!', Some('=')) => (Tok::NotEq, 2),
                ('=', Some('=')) => (Tok::DoubleEq, 2),
                ('!', _) => (Tok::Not, 1),
                ('=', _) => (Tok::Eq, 1),
                ('(', _) => (Tok::Open, 1),
                (')', _) => (Tok::Close, 1),
                (',', _) => (Tok::Comma, 1),
                ('>', _) => (Tok::Gt, 1),
                _ => (Tok::Lt, 1),
            };
            toks.push(tok);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        toks.push(match word.as_str() {
            "in" => Tok::In,
            "notin" => Tok::NotIn,
            _ => Tok::Ident(word),
        });
    }
    toks
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(k)) => {
                let errs = validation::qualified_name(&k);
                if let Some(e) = errs.first() {
                    return Err(format!("invalid label key \"{k}\": {e}"));
                }
                Ok(k)
            }
            Some(t) => Err(format!("found '{}', expected: identifier", t.show())),
            None => Err("found '', expected: identifier".into()),
        }
    }

    fn value(v: String) -> Result<String, String> {
        if let Some(e) = validation::label_value(&v).first() {
            return Err(format!("invalid label value: \"{v}\": at key: {e}"));
        }
        Ok(v)
    }

    /// In value position Go's parser reads the keywords `in` and `notin` as identifiers.
    fn as_value(t: &Tok) -> Option<String> {
        match t {
            Tok::Ident(v) => Some(v.clone()),
            Tok::In => Some("in".into()),
            Tok::NotIn => Some("notin".into()),
            _ => None,
        }
    }

    fn exact_value(&mut self) -> Result<String, String> {
        match self.peek() {
            None | Some(Tok::Comma) => Ok(String::new()),
            Some(t) => match Self::as_value(t) {
                Some(v) => {
                    self.pos += 1;
                    Self::value(v)
                }
                None => Err(format!("found '{}', expected: identifier", t.show())),
            },
        }
    }

    fn value_set(&mut self) -> Result<BTreeSet<String>, String> {
        match self.next() {
            Some(Tok::Open) => {}
            Some(t) => return Err(format!("found '{}', expected: '('", t.show())),
            None => return Err("found '', expected: '('".into()),
        }
        let mut set = BTreeSet::new();
        if self.peek() == Some(&Tok::Close) {
            self.pos += 1;
            return Err("for 'in', 'notin' operators, values set can't be empty".into());
        }
        loop {
            let next = self.next();
            match next {
                Some(ref t) if Self::as_value(t).is_some() => {
                    set.insert(Self::value(Self::as_value(t).expect("checked"))?);
                }
                // `(a,,b)` and `(a,)`: Go accepts an empty value between commas.
                Some(Tok::Comma) => {
                    set.insert(String::new());
                    continue;
                }
                Some(Tok::Close) => return Ok(set),
                Some(t) => {
                    return Err(format!(
                        "found '{}', expected: ',', ')' or identifier",
                        t.show()
                    ));
                }
                None => return Err("found '', expected: ')'".into()),
            }
            match self.next() {
                Some(Tok::Comma) => {}
                Some(Tok::Close) => return Ok(set),
                Some(t) => return Err(format!("found '{}', expected: ',' or ')'", t.show())),
                None => return Err("found '', expected: ')'".into()),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            return Ok(Requirement::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        match self.peek() {
            None | Some(Tok::Comma) => return Ok(Requirement::Exists(key)),
            _ => {}
        }
        match self.next() {
            Some(Tok::Eq) | Some(Tok::DoubleEq) => {
                Ok(Requirement::Equals(key, self.exact_value()?))
            }
            Some(Tok::NotEq) => Ok(Requirement::NotEquals(key, self.exact_value()?)),
            Some(Tok::In) => Ok(Requirement::In(key, self.value_set()?)),
            Some(Tok::NotIn) => Ok(Requirement::NotIn(key, self.value_set()?)),
            Some(op @ (Tok::Gt | Tok::Lt)) => {
                let v = match self.next() {
                    Some(Tok::Ident(v)) => v,
                    _ => {
                        return Err(
                            "for 'Gt', 'Lt' operators, exactly one value is required".into()
                        );
                    }
                };
                let n: i64 = v.parse().map_err(|_| {
                    format!("for 'Gt', 'Lt' operators, the value must be an integer: {v}")
                })?;
                Ok(if op == Tok::Gt {
                    Requirement::GreaterThan(key, n)
                } else {
                    Requirement::LessThan(key, n)
                })
            }
            Some(t) => Err(format!(
                "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                t.show()
            )),
            None => unreachable!("end handled above"),
        }
    }
}

impl LabelSelector {
    /// Parses a `labelSelector` query value. Errors are the text of the 400 BadRequest.
    pub fn parse(s: &str) -> Result<Self, String> {
        let toks = lex(s);
        if toks.is_empty() {
            return Ok(Self::default());
        }
        let mut p = Parser { toks, pos: 0 };
        let mut reqs = Vec::new();
        loop {
            reqs.push(
                p.requirement()
                    .map_err(|e| format!("unable to parse requirement: {e}"))?,
            );
            match p.next() {
                None => break,
                Some(Tok::Comma) => {
                    if p.peek().is_none() {
                        return Err("found '', expected: identifier after ','".into());
                    }
                }
                Some(t) => {
                    return Err(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        t.show()
                    ));
                }
            }
        }
        Ok(Self(reqs))
    }

    /// Builds a selector from a `metav1.LabelSelector` object (`matchLabels` and
    /// `matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`), as a
    /// PodDisruptionBudget's selects pods. An empty or absent one matches everything.
    pub fn from_object(sel: Option<&Value>) -> Self {
        let mut reqs = Vec::new();
        let Some(sel) = sel else {
            return Self(reqs);
        };
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            reqs.extend(Self::from_map(m).0);
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let values: BTreeSet<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            reqs.push(match e["operator"].as_str().unwrap_or_default() {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                _ => Requirement::DoesNotExist(key),
            });
        }
        Self(reqs)
    }

    /// Builds an equality-only selector from a map, as a Service selector is applied.
    pub fn from_map(m: &Map<String, Value>) -> Self {
        Self(
            m.iter()
                .map(|(k, v)| Requirement::Equals(k.clone(), v.as_str().unwrap_or_default().into()))
                .collect(),
        )
    }

    /// True when every requirement holds for `labels` (absent labels = empty map).
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|m| m.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, set) => get(k).is_some_and(|x| set.contains(x)),
            Requirement::NotIn(k, set) => get(k).is_none_or(|x| !set.contains(x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
            Requirement::GreaterThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Requirement::LessThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    /// The field label, e.g. `metadata.name`.
    pub field: String,
    /// The value compared against.
    pub value: String,
    /// `!=` rather than `=`/`==`.
    pub negated: bool,
}

/// A parsed field selector: all terms must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldTerm>);

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ (',' | '=' | '\\')) => out.push(n),
                Some(n) => return Err(format!("invalid escape sequence: \\{n}")),
                None => return Err("unterminated escape sequence".into()),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Finds the byte offset of the first unescaped occurrence of `op` in `s`.
fn find_unescaped(s: &str, op: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if s[i..].starts_with(op) {
            return Some(i);
        }
    }
    None
}

impl FieldSelector {
    /// Parses a `fieldSelector` query value (syntax only; the field support check is per kind).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(Self::default());
        }
        let mut terms = Vec::new();
        for part in split_unescaped(s, ',') {
            if part.is_empty() {
                continue;
            }
            let mut found = None;
            for (op, negated) in [("!=", true), ("==", false), ("=", false)] {
                if let Some(i) = find_unescaped(&part, op) {
                    found = Some((i, op.len(), negated));
                    break;
                }
            }
            let Some((i, len, negated)) = found else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            terms.push(FieldTerm {
                field: unescape(part[..i].trim())?,
                value: unescape(&part[i + len..])?,
                negated,
            });
        }
        Ok(Self(terms))
    }

    /// Holds when each term's field (looked up by `lookup`) compares as required.
    pub fn matches(&self, lookup: impl Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|t| (lookup(&t.field) == t.value) != t.negated)
    }

    /// The name if the selector pins `metadata.name=X` (used to authorise single-object watches
    /// by resourceNames, as the real RequestInfo resolver does).
    pub fn pinned_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|t| t.field == "metadata.name" && !t.negated)
            .map(|t| t.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn checklist_25_forms() {
        let a = labels(json!({"app":"web","tier":"fe"}));
        let b = labels(json!({"app":"db"}));
        let c = labels(json!({}));
        let sel = |s: &str| LabelSelector::parse(s).unwrap();
        let which = |s: &str| -> Vec<&str> {
            let sel = sel(s);
            [("a", &a), ("b", &b), ("c", &c)]
                .iter()
                .filter(|(_, l)| sel.matches(Some(l)))
                .map(|(n, _)| *n)
                .collect()
        };
        assert_eq!(which("app!=web"), ["b", "c"]);
        assert_eq!(which("app in (web,db)"), ["a", "b"]);
        assert_eq!(which("app notin (web)"), ["b", "c"]);
        assert_eq!(which("tier"), ["a"]);
        assert_eq!(which("!tier"), ["b", "c"]);
        assert_eq!(which("app=web,tier=fe"), ["a"]);
        assert_eq!(which("app==web"), ["a"]);
        assert_eq!(which(""), ["a", "b", "c"]);
    }

    #[test]
    fn malformed_selectors_fail() {
        for s in [
            "app in ()",
            "==",
            "app in (a",
            "a,",
            "a b",
            "!",
            "k>x",
            "bad key=v",
            "a=b c",
        ] {
            assert!(LabelSelector::parse(s).is_err(), "{s} should fail");
        }
        assert!(LabelSelector::parse("k>5").is_ok());
        // Keywords are values in value position, not keys.
        assert_eq!(
            LabelSelector::parse("k=in,j in (notin)").unwrap().0,
            vec![
                Requirement::Equals("k".into(), "in".into()),
                Requirement::In("j".into(), ["notin".to_string()].into()),
            ]
        );
        assert!(LabelSelector::parse("in=x").is_err());
        assert!(LabelSelector::parse("  app = web , tier  ").is_ok());
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("metadata.name=l1").unwrap();
        assert_eq!(f.pinned_name(), Some("l1"));
        let f = FieldSelector::parse("a!=x,b==y").unwrap();
        assert!(f.0[0].negated && !f.0[1].negated);
        let f = FieldSelector::parse(r"a=x\,y").unwrap();
        assert_eq!(f.0[0].value, "x,y");
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    proptest! {
        /// Whatever the input, parsing returns (never panics), and a parsed selector matches
        /// deterministically.
        #[test]
        fn label_parse_never_panics(s in "\\PC{0,40}") {
            if let Ok(sel) = LabelSelector::parse(&s) {
                let l = labels(json!({"app":"web"}));
                prop_assert_eq!(sel.matches(Some(&l)), sel.matches(Some(&l)));
            }
        }

        #[test]
        fn label_parse_selector_alphabet(s in "[a-z!=(),<> 0-9]{0,30}") {
            let _ = LabelSelector::parse(&s);
        }

        #[test]
        fn field_parse_never_panics(s in "\\PC{0,40}") {
            let _ = FieldSelector::parse(&s);
        }

        /// `k=v` rendered from valid parts always parses back to the same requirement.
        #[test]
        fn equality_roundtrip(k in "[a-z][a-z0-9]{0,10}", v in "[a-z0-9]{0,10}") {
            // Go's lexer turns these words into operator tokens, so they cannot be keys there
            // either (`in=x` is a parse error in kube-apiserver too).
            prop_assume!(k != "in" && k != "notin");
            let sel = LabelSelector::parse(&format!("{k}={v}")).unwrap();
            prop_assert_eq!(sel.0, vec![Requirement::Equals(k, v)]);
        }
    }
}
