//! The instance-type limits table (aws-eni-limits.csv): parse it and look
//! types up, with close-name suggestions for typos.

use serde::Serialize;
use std::collections::BTreeMap;

/// The table shipped with the binary; `--limits-file` replaces it.
pub const EMBEDDED_CSV: &str = include_str!("../../data/aws-eni-limits.csv");

/// Columns the planner needs, in the order the shipped file has them. A
/// newer file may reorder columns or add new ones: we look them up by name.
const COLUMNS: [&str; 10] = [
    "instance_type",
    "max_enis",
    "ipv4_per_eni",
    "hypervisor",
    "is_bare_metal",
    "prefix_delegation_supported",
    "network_cards",
    "enis_all_cards",
    "max_pods_secondary_ip",
    "max_pods_pd_raw",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error(
        "limits table {source_name} is empty: expected a header line starting with `instance_type`"
    )]
    Empty { source_name: String },
    #[error("limits table {source_name}: header lacks column `{column}`; use a file with the columns of flannelctl/data/aws-eni-limits.csv")]
    MissingColumn { source_name: String, column: String },
    #[error("limits table {source_name}, line {line}: expected {expected} fields, found {found}")]
    FieldCount {
        source_name: String,
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("limits table {source_name}, line {line}: column `{column}` has `{value}`, expected {expected}")]
    BadValue {
        source_name: String,
        line: usize,
        column: String,
        value: String,
        expected: &'static str,
    },
    #[error("limits table {source_name}, line {line}: instance type `{name}` appears twice")]
    Duplicate {
        source_name: String,
        line: usize,
        name: String,
    },
    #[error("unknown instance type `{name}`: not among the {known} types of the limits table{}; check the spelling, or pass --limits-file with a newer table", suggestion_text(.suggestions))]
    UnknownType {
        name: String,
        known: usize,
        suggestions: Vec<String>,
    },
}

fn suggestion_text(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", suggestions.join(", "))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hypervisor {
    Nitro,
    Xen,
    Unknown,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceLimits {
    pub instance_type: String,
    pub max_enis: u32,
    pub ipv4_per_eni: u32,
    pub hypervisor: Hypervisor,
    pub is_bare_metal: bool,
    pub prefix_delegation_supported: bool,
    pub network_cards: u32,
    pub enis_all_cards: u32,
    pub max_pods_secondary_ip: u32,
    /// Empty in the table for types without prefix delegation.
    pub max_pods_pd_raw: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct LimitsTable {
    rows: BTreeMap<String, InstanceLimits>,
}

impl LimitsTable {
    /// Parses CSV text; `source_name` names the file in error messages.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, LimitsError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| LimitsError::Empty {
            source_name: source_name.to_string(),
        })?;
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let mut index = [0usize; COLUMNS.len()];
        for (slot, column) in index.iter_mut().zip(COLUMNS) {
            *slot = names.iter().position(|n| *n == column).ok_or_else(|| {
                LimitsError::MissingColumn {
                    source_name: source_name.to_string(),
                    column: column.to_string(),
                }
            })?;
        }
        let mut rows = BTreeMap::new();
        for (line, text) in lines {
            let fields: Vec<&str> = text.split(',').map(str::trim).collect();
            if fields.len() != names.len() {
                return Err(LimitsError::FieldCount {
                    source_name: source_name.to_string(),
                    line,
                    expected: names.len(),
                    found: fields.len(),
                });
            }
            let cell = Cell {
                fields: &fields,
                source_name,
                line,
            };
            let row = InstanceLimits {
                instance_type: fields[index[0]].to_string(),
                max_enis: cell.number(index[1], COLUMNS[1])?,
                ipv4_per_eni: cell.number(index[2], COLUMNS[2])?,
                hypervisor: cell.hypervisor(index[3])?,
                is_bare_metal: cell.boolean(index[4], COLUMNS[4])?,
                prefix_delegation_supported: cell.boolean(index[5], COLUMNS[5])?,
                network_cards: cell.number(index[6], COLUMNS[6])?,
                enis_all_cards: cell.number(index[7], COLUMNS[7])?,
                max_pods_secondary_ip: cell.number(index[8], COLUMNS[8])?,
                max_pods_pd_raw: cell.optional_number(index[9], COLUMNS[9])?,
            };
            // An ENI with one address has no slot for pods; the formulas
            // would underflow, so such a row is a broken table.
            if row.max_enis == 0 || row.ipv4_per_eni < 2 {
                return Err(LimitsError::BadValue {
                    source_name: source_name.to_string(),
                    line,
                    column: "max_enis/ipv4_per_eni".to_string(),
                    value: format!("{}/{}", row.max_enis, row.ipv4_per_eni),
                    expected: "at least 1 ENI with at least 2 IPv4 addresses",
                });
            }
            if rows.contains_key(&row.instance_type) {
                return Err(LimitsError::Duplicate {
                    source_name: source_name.to_string(),
                    line,
                    name: row.instance_type,
                });
            }
            rows.insert(row.instance_type.clone(), row);
        }
        Ok(Self { rows })
    }

    pub fn embedded() -> Result<Self, LimitsError> {
        Self::parse(EMBEDDED_CSV, "embedded aws-eni-limits.csv")
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &InstanceLimits> {
        self.rows.values()
    }

    /// Looks a type up (case-insensitive); on a miss, suggests up to three
    /// close names.
    pub fn get(&self, name: &str) -> Result<&InstanceLimits, LimitsError> {
        let wanted = name.trim().to_ascii_lowercase();
        if let Some(row) = self.rows.get(&wanted) {
            return Ok(row);
        }
        let mut scored: Vec<(usize, &str)> = self
            .iter()
            .map(|row| row.instance_type.as_str())
            .map(|k| (edit_distance(&wanted, k), k))
            .filter(|(d, _)| *d <= 3.max(wanted.len() / 4))
            .collect();
        scored.sort();
        Err(LimitsError::UnknownType {
            name: name.to_string(),
            known: self.len(),
            suggestions: scored
                .into_iter()
                .take(3)
                .map(|(_, k)| k.to_string())
                .collect(),
        })
    }
}

/// Field access for one line, so each error names line, column and value.
struct Cell<'a> {
    fields: &'a [&'a str],
    source_name: &'a str,
    line: usize,
}

impl Cell<'_> {
    fn bad(&self, column: &str, value: &str, expected: &'static str) -> LimitsError {
        LimitsError::BadValue {
            source_name: self.source_name.to_string(),
            line: self.line,
            column: column.to_string(),
            value: value.to_string(),
            expected,
        }
    }

    fn number<T: std::str::FromStr>(&self, i: usize, column: &str) -> Result<T, LimitsError> {
        let value = self.fields[i];
        value
            .parse()
            .map_err(|_| self.bad(column, value, "a non-negative integer"))
    }

    fn optional_number<T: std::str::FromStr>(
        &self,
        i: usize,
        column: &str,
    ) -> Result<Option<T>, LimitsError> {
        if self.fields[i].is_empty() {
            Ok(None)
        } else {
            self.number(i, column).map(Some)
        }
    }

    fn boolean(&self, i: usize, column: &str) -> Result<bool, LimitsError> {
        match self.fields[i] {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(self.bad(column, other, "true or false")),
        }
    }

    fn hypervisor(&self, i: usize) -> Result<Hypervisor, LimitsError> {
        match self.fields[i] {
            "nitro" => Ok(Hypervisor::Nitro),
            "xen" => Ok(Hypervisor::Xen),
            "unknown" | "" => Ok(Hypervisor::Unknown),
            other => Err(self.bad("hypervisor", other, "nitro, xen or unknown")),
        }
    }
}

/// Levenshtein distance over bytes (instance type names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "instance_type,max_enis,ipv4_per_eni,hypervisor,is_bare_metal,prefix_delegation_supported,network_cards,enis_all_cards,max_pods_secondary_ip,max_pods_pd_raw";

    #[test]
    fn embedded_table_has_all_1391_rows() {
        let table = LimitsTable::embedded().unwrap();
        assert_eq!(table.len(), 1391);
    }

    #[test]
    fn every_row_matches_the_max_pods_formulas() {
        let table = LimitsTable::embedded().unwrap();
        for row in table.iter() {
            let slots = u64::from(row.max_enis) * u64::from(row.ipv4_per_eni - 1);
            assert_eq!(
                u64::from(row.max_pods_secondary_ip),
                slots + 2,
                "{}",
                row.instance_type
            );
            // The PD value is given exactly for the PD-capable types.
            let expected_pd = row.prefix_delegation_supported.then_some(slots * 16 + 2);
            assert_eq!(row.max_pods_pd_raw, expected_pd, "{}", row.instance_type);
        }
    }

    #[test]
    fn pd_support_is_nitro_or_bare_metal() {
        let table = LimitsTable::embedded().unwrap();
        let mut capable = 0;
        for row in table.iter() {
            let expected = row.hypervisor == Hypervisor::Nitro || row.is_bare_metal;
            // cr1.8xlarge and hs1.8xlarge report "unknown" without being bare
            // metal; the CNI still treats them as PD-capable (facts doc, 1309).
            if row.prefix_delegation_supported {
                capable += 1;
            }
            if row.hypervisor != Hypervisor::Unknown {
                assert_eq!(
                    row.prefix_delegation_supported, expected,
                    "{}",
                    row.instance_type
                );
            }
        }
        assert_eq!(capable, 1309);
    }

    #[test]
    fn known_rows() {
        let table = LimitsTable::embedded().unwrap();
        let m5 = table.get("m5.large").unwrap();
        assert_eq!(
            (m5.max_enis, m5.ipv4_per_eni, m5.max_pods_secondary_ip),
            (3, 10, 29)
        );
        assert_eq!(table.get("M5.Large").unwrap().instance_type, "m5.large");
        let t3 = table.get("t3.small").unwrap();
        assert_eq!((t3.max_enis, t3.ipv4_per_eni), (3, 4));
    }

    #[test]
    fn unknown_type_suggests_close_names() {
        let table = LimitsTable::embedded().unwrap();
        let err = table.get("m5.larg").unwrap_err();
        match &err {
            LimitsError::UnknownType { suggestions, .. } => {
                assert_eq!(suggestions.first().map(String::as_str), Some("m5.large"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("did you mean m5.large"));
        let err = table.get("zzzzzzzzzzzzzzzzzzzz").unwrap_err();
        assert!(!err.to_string().contains("did you mean"), "{err}");
    }

    #[test]
    fn malformed_tables_name_line_and_column() {
        let missing = "instance_type,max_enis\nm5.large,3\n";
        assert!(matches!(
            LimitsTable::parse(missing, "t.csv"),
            Err(LimitsError::MissingColumn { column, .. }) if column == "ipv4_per_eni"
        ));
        let bad = format!("{HEADER}\nm5.large,three,10,nitro,false,true,1,3,29,434\n");
        let err = LimitsTable::parse(&bad, "t.csv").unwrap_err();
        assert_eq!(
            err.to_string(),
            "limits table t.csv, line 2: column `max_enis` has `three`, expected a non-negative integer"
        );
        let short = format!("{HEADER}\nm5.large,3,10\n");
        assert!(matches!(
            LimitsTable::parse(&short, "t.csv"),
            Err(LimitsError::FieldCount {
                line: 2,
                found: 3,
                ..
            })
        ));
        let dup = format!(
            "{HEADER}\nm5.large,3,10,nitro,false,true,1,3,29,434\nm5.large,3,10,nitro,false,true,1,3,29,434\n"
        );
        assert!(matches!(
            LimitsTable::parse(&dup, "t.csv"),
            Err(LimitsError::Duplicate { line: 3, .. })
        ));
        let zero = format!("{HEADER}\nx.large,3,1,nitro,false,true,1,3,2,2\n");
        assert!(matches!(
            LimitsTable::parse(&zero, "t.csv"),
            Err(LimitsError::BadValue { .. })
        ));
        assert!(matches!(
            LimitsTable::parse("\n\n", "t.csv"),
            Err(LimitsError::Empty { .. })
        ));
    }

    #[test]
    fn reordered_columns_still_parse() {
        let text = "max_enis,instance_type,ipv4_per_eni,hypervisor,is_bare_metal,prefix_delegation_supported,network_cards,enis_all_cards,max_pods_secondary_ip,max_pods_pd_raw,extra\n3,m5.large,10,nitro,false,true,1,3,29,434,x\n";
        let table = LimitsTable::parse(text, "t.csv").unwrap();
        assert_eq!(table.get("m5.large").unwrap().max_enis, 3);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("m5.large", "m5.large"), 0);
        assert_eq!(edit_distance("m5.larg", "m5.large"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
