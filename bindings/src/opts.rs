//! Reading script option maps (`#{frames: 8, fit: "crop"}`) with errors that name the function, the
//! option, the expected type and the allowed keys; and arguments that take one value or an array of them.

use rhai::{Dynamic, EvalAltResult, Map, Position};

pub type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// A script-facing error at the call site (Rhai fills in the position).
pub fn script_error(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(message.into()), Position::NONE))
}

/// Maps a runtime result into a script result; a cancel becomes Rhai's "terminated" error.
pub fn rt<T>(r: vidtune_runtime::Result<T>) -> RhaiResult<T> {
    r.map_err(|e| match e {
        vidtune_runtime::Error::Cancelled => {
            Box::new(EvalAltResult::ErrorTerminated(Dynamic::from("cancelled"), Position::NONE))
        }
        other => script_error(other.to_string()),
    })
}

/// The options map of one call.
pub struct Opts<'a> {
    func: &'a str,
    map: Map,
}

fn type_name(v: &Dynamic) -> String {
    match v.type_name() {
        "i64" => "integer".into(),
        "f64" => "float".into(),
        "bool" => "boolean".into(),
        "string" | "ImmutableString" => "string".into(),
        "array" => "array".into(),
        "map" => "map".into(),
        other => match other.rsplit("::").next().unwrap_or(other) {
            // The names scripts know these types by.
            "ScriptTensor" => "Tensor".into(),
            "ScriptLatents" => "Latents".into(),
            "ScriptVideoModel" => "VideoModel".into(),
            "SdModel" => "StableDiffusion".into(),
            "ScriptClip" => "Clip".into(),
            "ScriptSam" => "Sam".into(),
            short => short.to_string(),
        },
    }
}

/// Option names users know from diffusers and Tune-A-Video, and the name vidtune gives the same thing:
/// those of the options the runtime declares ([`vidtune_runtime::options`]), then these.
/// An alias is accepted wherever its vidtune name is an option of the function.
const MORE_ALIASES: &[(&str, &str)] = &[("image", "first_frame")];

/// Aliases that belong to one function only (the others apply wherever their vidtune name is an option).
const ALIAS_ONLY: &[(&str, &str)] = &[("num_inv_steps", "invert"), ("max_train_steps", "tune")];

/// Aliases that mean something else in a function: refused there with the name to use.
const ALIAS_MISLEADS: &[(&str, &str, &str)] = &[(
    "num_inference_steps",
    "tune",
    "is diffusers' number of sampling steps; tune's \"steps\" are training steps (Tune-A-Video's \
     max_train_steps): give \"steps\" here, and num_inference_steps to sample or invert",
)];

/// Every alias and the name it stands for (see [`MORE_ALIASES`]).
pub fn aliases() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<(&'static str, &'static str)> = vec![];
    let declared = vidtune_runtime::options::SHARED.iter().flat_map(|o| o.aliases.iter().map(move |a| (*a, o.name)));
    for pair in declared.chain(MORE_ALIASES.iter().copied()) {
        if !all.contains(&pair) {
            all.push(pair);
        }
    }
    all
}

/// The aliases `func` accepts, given its option names.
pub fn aliases_for(func: &str, names: &[&str]) -> Vec<(&'static str, &'static str)> {
    aliases()
        .into_iter()
        .filter(|(a, n)| names.contains(n) && !names.contains(a))
        .filter(|(a, _)| ALIAS_ONLY.iter().all(|(alias, f)| alias != a || *f == func))
        .collect()
}

/// Edit distance between two names (ASCII-lowercased): insertions, deletions, substitutions and swaps of
/// neighbouring letters each count one (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.to_lowercase().chars().collect(), b.to_lowercase().chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j - 1] + cost).min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The allowed name closest to `key`, when it is close enough to be a slip (a third of its letters, at
/// least one) or `key` is a word of it (`inference_steps` → `steps`).
pub fn did_you_mean<'n>(key: &str, allowed: &[&'n str]) -> Option<&'n str> {
    let limit = (key.chars().count() / 3).max(1);
    allowed.iter().map(|n| (edit_distance(key, n), *n)).filter(|(d, _)| *d <= limit).min().map(|(_, n)| n).or_else(
        || {
            let words: Vec<&str> = key.split('_').filter(|w| w.len() > 2).collect();
            allowed.iter().copied().find(|n| words.contains(n))
        },
    )
}

impl<'a> Opts<'a> {
    /// Checks that every key of `map` is one of `allowed`, after renaming the diffusers / Tune-A-Video
    /// names of [`aliases`]; an unknown key gets a "did you mean" when one is close.
    pub fn new(func: &'a str, mut map: Map, allowed: &[&str]) -> RhaiResult<Self> {
        for (alias, f, why) in ALIAS_MISLEADS {
            if *f == func && map.contains_key(*alias) {
                return Err(script_error(format!("{func}: option {alias:?} {why}")));
            }
        }
        // diffusers' `height` / `width` for vidtune's `size: [w, h]`.
        if allowed.contains(&"size") && !allowed.contains(&"width") {
            match (map.remove("width"), map.remove("height")) {
                (None, None) => {}
                (Some(w), Some(h)) if !map.contains_key("size") => {
                    map.insert("size".into(), Dynamic::from(vec![w, h]));
                }
                (w, _) => {
                    let given = if map.contains_key("size") {
                        "\"size\" and \"width\" / \"height\" are the same option; give one of them".to_string()
                    } else {
                        format!(
                            "give both \"width\" and \"height\" (diffusers' names), or \"size\": [w, h]; got only {}",
                            if w.is_some() { "width" } else { "height" }
                        )
                    };
                    return Err(script_error(format!("{func}: {given}")));
                }
            }
        }
        for (alias, name) in aliases_for(func, allowed) {
            if let Some(v) = map.remove(alias) {
                if map.contains_key(name) {
                    return Err(script_error(format!(
                        "{func}: options {alias:?} and {name:?} are the same option; give one of them"
                    )));
                }
                map.insert(name.into(), v);
            }
        }
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let mut names: Vec<_> = allowed.to_vec();
                names.sort_unstable();
                // The names users know count too: "guidence_scale" is near diffusers' "guidance_scale".
                let aliases = aliases_for(func, allowed);
                let mut known: Vec<&str> = allowed.to_vec();
                known.extend(aliases.iter().map(|(a, _)| *a));
                let hint = match did_you_mean(key, &known) {
                    Some(n) if allowed.contains(&n) => format!(" (did you mean {n:?}?)"),
                    Some(alias) => {
                        let name = aliases.iter().find(|(a, _)| *a == alias).map_or(alias, |(_, n)| *n);
                        format!(" (did you mean {alias:?}, vidtune's {name:?}?)")
                    }
                    None => String::new(),
                };
                return Err(script_error(format!(
                    "{func}: unknown option {key:?}{hint}; allowed options: {}",
                    names.join(", ")
                )));
            }
        }
        Ok(Opts { func, map })
    }

    /// Checks that every key of `map` is declared in `options` (the function's documented table).
    pub fn declared(func: &'a str, map: Map, options: &[crate::docs::OptDoc]) -> RhaiResult<Self> {
        Opts::new(func, map, &crate::docs::option_names(options))
    }

    /// Runs a single-file save of `func` under its options' `overwrite` ([`crate::docs::SAVE_FILE_OPTIONS`]).
    pub fn saving<T>(func: &'a str, map: Map, save: impl FnOnce() -> RhaiResult<T>) -> RhaiResult<T> {
        let o = Opts::declared(func, map, crate::docs::SAVE_FILE_OPTIONS)?;
        let yes = o.bool("overwrite")?.unwrap_or(false);
        vidtune_runtime::fsutil::with_overwrite(yes, save)
    }

    /// The function these options belong to.
    pub fn func(&self) -> &str {
        self.func
    }

    /// No options.
    pub fn empty(func: &'a str) -> Self {
        Opts { func, map: Map::new() }
    }

    fn wrong(&self, key: &str, expected: &str, got: &Dynamic) -> Box<EvalAltResult> {
        script_error(format!(
            "{}: option {key:?} must be {expected}, got {} {}",
            self.func,
            type_name(got),
            crate::values::describe(got)
        ))
    }

    /// The options as given (after renaming aliases).
    pub fn map(&self) -> &Map {
        &self.map
    }

    pub fn get(&self, key: &str) -> Option<&Dynamic> {
        self.map.get(key).filter(|v| !v.is_unit())
    }

    pub fn int(&self, key: &str) -> RhaiResult<Option<i64>> {
        self.get(key).map(|v| v.as_int().map_err(|_| self.wrong(key, "an integer", v))).transpose()
    }

    /// A non-negative integer, as a count or index.
    pub fn count(&self, key: &str) -> RhaiResult<Option<usize>> {
        match self.int(key)? {
            Some(n) if n < 0 => Err(script_error(format!("{}: option {key:?} must be >= 0, got {n}", self.func))),
            other => Ok(other.map(|n| n as usize)),
        }
    }

    pub fn float(&self, key: &str) -> RhaiResult<Option<f64>> {
        self.get(key)
            .map(|v| v.as_float().or_else(|_| v.as_int().map(|i| i as f64)).map_err(|_| self.wrong(key, "a number", v)))
            .transpose()
    }

    pub fn bool(&self, key: &str) -> RhaiResult<Option<bool>> {
        self.get(key).map(|v| v.as_bool().map_err(|_| self.wrong(key, "true or false", v))).transpose()
    }

    pub fn string(&self, key: &str) -> RhaiResult<Option<String>> {
        self.get(key).map(|v| v.clone().into_string().map_err(|_| self.wrong(key, "a string", v))).transpose()
    }

    /// A size: one integer (square) or `[width, height]`.
    pub fn size(&self, key: &str) -> RhaiResult<Option<(i64, i64)>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        if let Ok(n) = v.as_int() {
            return Ok(Some((n, n)));
        }
        if let Some(arr) = v.clone().try_cast::<rhai::Array>() {
            if let [w, h] = arr.as_slice() {
                if let (Ok(w), Ok(h)) = (w.as_int(), h.as_int()) {
                    return Ok(Some((w, h)));
                }
            }
        }
        Err(self.wrong(key, "an integer or [width, height]", v))
    }

    /// A value of a registered custom type.
    pub fn custom<T: Clone + 'static>(&self, key: &str, type_label: &str) -> RhaiResult<Option<T>> {
        self.get(key).map(|v| v.clone().try_cast::<T>().ok_or_else(|| self.wrong(key, type_label, v))).transpose()
    }
}

/// One or several values of type `T` (a value, or an array of them) under `what`.
pub fn one_or_many<T: Clone + 'static>(func: &str, what: &str, label: &str, v: &Dynamic) -> RhaiResult<Vec<T>> {
    if let Some(x) = v.clone().try_cast::<T>() {
        return Ok(vec![x]);
    }
    let wrong = || {
        script_error(format!("{func}: {what} must be {label} or an array of them, got {}", crate::values::describe(v)))
    };
    v.clone()
        .try_cast::<rhai::Array>()
        .ok_or_else(wrong)?
        .into_iter()
        .map(|x| x.try_cast::<T>().ok_or_else(wrong))
        .collect()
}

/// A script value as JSON (maps, arrays, numbers, strings, booleans; other values by their text).
pub fn to_json(v: &Dynamic) -> serde_json::Value {
    if v.is_unit() {
        serde_json::Value::Null
    } else if let Ok(b) = v.as_bool() {
        b.into()
    } else if let Ok(i) = v.as_int() {
        i.into()
    } else if let Ok(f) = v.as_float() {
        serde_json::Number::from_f64(f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
    } else if v.is_string() {
        v.to_string().into()
    } else if let Some(arr) = v.read_lock::<rhai::Array>() {
        arr.iter().map(to_json).collect::<Vec<_>>().into()
    } else if let Some(map) = v.read_lock::<Map>() {
        map.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect::<serde_json::Map<_, _>>().into()
    } else {
        crate::values::describe(v).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Dynamic)]) -> Map {
        pairs.iter().map(|(k, v)| ((*k).into(), v.clone())).collect()
    }

    #[test]
    fn unknown_keys_list_the_allowed_ones() {
        let err = Opts::new("load_video", map(&[("frame", Dynamic::from(3_i64))]), &["frames", "start"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown option \"frame\"") && err.contains("frames, start"), "{err}");
        assert!(err.contains("did you mean \"frames\"?"), "{err}");
    }

    #[test]
    fn diffusers_names_are_aliases_and_slips_get_a_suggestion() {
        let allowed = ["guidance", "steps", "negative", "seed", "lr"];
        let o = Opts::new(
            "sample",
            map(&[
                ("guidance_scale", Dynamic::from(7.5)),
                ("num_inference_steps", Dynamic::from(20_i64)),
                ("negative_prompt", Dynamic::from("blurry")),
                ("generator", Dynamic::from(3_i64)),
                ("learning_rate", Dynamic::from(1e-4)),
            ]),
            &allowed,
        )
        .unwrap();
        assert_eq!(o.float("guidance").unwrap(), Some(7.5));
        assert_eq!(o.int("steps").unwrap(), Some(20));
        assert_eq!(o.string("negative").unwrap().as_deref(), Some("blurry"));
        assert_eq!(o.int("seed").unwrap(), Some(3));
        assert_eq!(o.float("lr").unwrap(), Some(1e-4));
        // An alias of an option the function does not have stays unknown.
        let err = Opts::new("load_video", map(&[("guidance_scale", Dynamic::from(7.5))]), &["frames"]).err().unwrap();
        assert!(err.to_string().contains("unknown option \"guidance_scale\""), "{err}");
        // Both names at once.
        let both = map(&[("guidance_scale", Dynamic::from(7.5)), ("guidance", Dynamic::from(5.0))]);
        let err = Opts::new("sample", both, &allowed).err().unwrap().to_string();
        assert!(err.contains("the same option"), "{err}");
        // Slips.
        assert_eq!(did_you_mean("gudiance", &allowed), Some("guidance"));
        assert_eq!(did_you_mean("inference_steps", &allowed), Some("steps"));
        assert_eq!(did_you_mean("colour", &allowed), None);
        assert_eq!(did_you_mean("stpes", &allowed), Some("steps"), "a swap is one slip");
    }

    #[test]
    fn wrong_types_are_named() {
        let o = Opts::new("f", map(&[("size", Dynamic::from("big"))]), &["size"]).unwrap();
        let err = o.size("size").unwrap_err().to_string();
        assert!(err.contains("\"size\" must be an integer or [width, height], got string \"big\""), "{err}");
        let o = Opts::new(
            "f",
            map(&[("size", Dynamic::from(vec![Dynamic::from(4_i64), Dynamic::from(2_i64)]))]),
            &["size"],
        )
        .unwrap();
        assert_eq!(o.size("size").unwrap(), Some((4, 2)));
        let o = Opts::new("f", map(&[("n", Dynamic::from(-1_i64))]), &["n"]).unwrap();
        assert!(o.count("n").unwrap_err().to_string().contains(">= 0"));
    }
}
