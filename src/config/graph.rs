//! Graph checks over a loaded configuration: every input exists, there is no cycle, signals
//! match, nothing is left unused, and every sink is downstream of redaction.

use std::collections::{BTreeMap, BTreeSet};

use super::{Config, ConfigError, Origin};
use crate::event::Signals;

/// A node of the graph as the checks see it.
struct Node<'a> {
    section: &'static str,
    origin: &'a Origin,
    inputs: &'a [String],
}

impl Node<'_> {
    fn name(&self, id: &str) -> String {
        format!("{}.{id}", self.section)
    }
}

/// The components in an order where every component comes after its inputs (sources first),
/// or the ids that sit on a cycle.
pub fn topological_order(config: &Config) -> Result<Vec<String>, Vec<String>> {
    let nodes = nodes(config);
    let mut order = Vec::with_capacity(nodes.len());
    let mut done: BTreeSet<&str> = BTreeSet::new();
    loop {
        let before = order.len();
        for (id, n) in &nodes {
            if !done.contains(id)
                && n.inputs.iter().all(|i| done.contains(i.as_str()) || !nodes.contains_key(i.as_str()))
            {
                done.insert(id);
                order.push(id.to_string());
            }
        }
        if order.len() == nodes.len() {
            return Ok(order);
        }
        if order.len() == before {
            return Err(nodes.keys().filter(|id| !done.contains(*id)).map(|s| s.to_string()).collect());
        }
    }
}

fn nodes(config: &Config) -> BTreeMap<&str, Node<'_>> {
    let mut nodes = BTreeMap::new();
    for s in &config.sources {
        nodes.insert(s.id.as_str(), Node { section: "sources", origin: &s.origin, inputs: &s.inputs });
    }
    for t in &config.transforms {
        nodes.insert(t.id.as_str(), Node { section: "transforms", origin: &t.origin, inputs: &t.inputs });
    }
    for s in &config.sinks {
        nodes.insert(s.id.as_str(), Node { section: "sinks", origin: &s.origin, inputs: &s.inputs });
    }
    nodes
}

/// Runs every check; returns all the errors found.
pub fn check(config: &Config) -> Vec<ConfigError> {
    let nodes = nodes(config);
    let mut errors = Vec::new();
    let err = |id: &str, n: &Node<'_>, msg: String| {
        ConfigError::new(msg).at(n.origin.clone()).component(n.name(id))
    };

    if config.sources.is_empty() {
        errors.push(ConfigError::new("no sources: define at least one `[sources.NAME]`"));
    }
    if config.sinks.is_empty() {
        errors.push(ConfigError::new("no sinks: define at least one `[sinks.NAME]`"));
    }

    // Inputs exist and are not sinks.
    for (id, n) in &nodes {
        let mut dup = BTreeSet::new();
        for i in n.inputs {
            match nodes.get(i.as_str()) {
                None => errors.push(err(
                    id,
                    n,
                    format!("unknown input `{i}`{}", suggest(i, nodes.keys().copied())),
                )),
                Some(target) if target.section == "sinks" => {
                    errors.push(err(id, n, format!("input `{i}` is a sink; sinks have no output")))
                }
                Some(_) if i == id => errors.push(err(id, n, "a component cannot be its own input".into())),
                Some(_) => {}
            }
            if !dup.insert(i) {
                errors.push(err(id, n, format!("input `{i}` is listed twice")));
            }
        }
    }
    if !errors.is_empty() {
        return errors;
    }

    let order = match topological_order(config) {
        Ok(o) => o,
        Err(cycle) => {
            let first = nodes.get(cycle[0].as_str()).expect("cycle ids are nodes");
            errors.push(err(&cycle[0], first, format!("cycle between {}", cycle.join(", "))));
            return errors;
        }
    };

    // Unused components.
    let consumed: BTreeSet<&str> = nodes.values().flat_map(|n| n.inputs.iter().map(String::as_str)).collect();
    for (id, n) in &nodes {
        if n.section != "sinks" && !consumed.contains(id) {
            errors.push(err(id, n, "not used: no transform or sink lists it in `inputs`".into()));
        }
    }

    // Signals and redaction, in topological order.
    let mut emits: BTreeMap<&str, Signals> = BTreeMap::new();
    let mut redacted: BTreeMap<&str, bool> = BTreeMap::new();
    for s in &config.sources {
        emits.insert(&s.id, s.config.outputs());
        redacted.insert(&s.id, false);
    }
    for id in &order {
        let n = &nodes[id.as_str()];
        if n.section == "sources" {
            continue;
        }
        let input: Signals = n.inputs.iter().fold(Signals::NONE, |acc, i| acc.union(emits[i.as_str()]));
        let all_redacted = n.inputs.iter().all(|i| redacted[i.as_str()]);
        if n.section == "transforms" {
            let t = config.transforms.iter().find(|t| &t.id == id).expect("transform in graph");
            if !input.intersects(t.config.accepts()) {
                errors.push(err(
                    id,
                    n,
                    format!("accepts {} but its inputs emit {input}", t.config.accepts()),
                ));
            }
            emits.insert(&t.id, t.config.outputs(input));
            redacted.insert(&t.id, all_redacted || t.config.redacts());
        } else {
            let s = config.sinks.iter().find(|s| &s.id == id).expect("sink in graph");
            if !input.intersects(s.config.accepts()) {
                errors.push(err(
                    id,
                    n,
                    format!("accepts {} but its inputs emit {input}", s.config.accepts()),
                ));
            }
            if s.allow_unredacted {
                if let Err(message) = s.config.check_unredacted() {
                    errors.push(err(id, n, message));
                }
            }
            if !all_redacted && !s.allow_unredacted {
                let raw: Vec<&str> =
                    n.inputs.iter().filter(|i| !redacted[i.as_str()]).map(String::as_str).collect();
                errors.push(err(
                    id,
                    n,
                    format!(
                        "input {} is not downstream of a `redact` transform; route it through one, or set `allow_unredacted = true` on this sink",
                        raw.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    errors
}

fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let best = known.map(|k| (edit_distance(name, k), k)).filter(|(d, k)| *d <= 2.max(k.len() / 3)).min();
    match best {
        Some((_, k)) => format!(" (did you mean `{k}`?)"),
        None => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
