//! The words an edit changes: a source description against an edit prompt, word by word. Recipes build
//! their negative prompts and staged edits from them ("a red circle …" → "a blue circle …": the edit drops
//! "red" and keeps "a … bouncing on a green striped background" around its subject; a multiple edit's
//! first stage is the source with only the subject's changes).

/// The words of `from` that `to` does not have, in order, joined by spaces ("" for none).
pub fn dropped_words(from: &str, to: &str) -> String {
    let kept: Vec<&str> = to.split_whitespace().collect();
    from.split_whitespace().filter(|w| !kept.contains(w)).collect::<Vec<_>>().join(" ")
}

/// The words of `from` that `to` keeps, less the subject's (a word of `subject`), in order: what the
/// subject must not fade into ("a red circle bouncing on a green striped background" → "a blue circle …",
/// subject "blue circle": "a bouncing on a green striped background").
pub fn surroundings(from: &str, to: &str, subject: &str) -> String {
    let kept: Vec<&str> = to.split_whitespace().collect();
    let names: Vec<&str> = subject.split_whitespace().collect();
    from.split_whitespace().filter(|w| kept.contains(w) && !names.contains(w)).collect::<Vec<_>>().join(" ")
}

/// The negative prompts a recipe can draw with, by name.
pub const NEGATIVES: [&str; 4] = ["none", "source", "changed", "surroundings"];

/// The negative prompt named `kind` (one of [`NEGATIVES`]) for an edit of `from` into `to`: "none" (empty),
/// "source" (`from` itself), "changed" ([`dropped_words`]) or "surroundings" ([`surroundings`]).
pub fn negative_prompt(kind: &str, from: &str, to: &str, subject: &str) -> crate::error::Result<String> {
    Ok(match kind {
        "none" => String::new(),
        "source" => from.to_string(),
        "changed" => dropped_words(from, to),
        "surroundings" => surroundings(from, to, subject),
        _ => return crate::invalid!("negative prompt {kind:?}: expected {}", NEGATIVES.join(", ")),
    })
}

/// `from` with only those changes of `to` that name the subject (a word of `subject`): the words are
/// aligned by their longest common subsequence, and each run of changed words between two common ones
/// takes `to`'s words when they name the subject, else keeps `from`'s. The first stage of a multiple edit:
/// "a white circle on a orange …" → "a pink circle on a red …", subject "pink circle", gives "a pink
/// circle on a orange …".
pub fn subject_prompt(from: &str, to: &str, subject: &str) -> String {
    let a: Vec<&str> = from.split_whitespace().collect();
    let b: Vec<&str> = to.split_whitespace().collect();
    let names: Vec<&str> = subject.split_whitespace().collect();
    let (n, m) = (a.len(), b.len());
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] = if a[i] == b[j] { common[i + 1][j + 1] + 1 } else { common[i + 1][j].max(common[i][j + 1]) };
        }
    }
    let mut out: Vec<&str> = vec![];
    let (mut dropped, mut added): (Vec<&str>, Vec<&str>) = (vec![], vec![]);
    // A run of changes ends: the edit's words if they name the subject, else the source's.
    fn settle<'a>(out: &mut Vec<&'a str>, dropped: &mut Vec<&'a str>, added: &mut Vec<&'a str>, names: &[&str]) {
        let names_subject = added.iter().any(|w| names.contains(w));
        out.append(if names_subject { added } else { dropped });
        dropped.clear();
        added.clear();
    }
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] && common[i][j] == common[i + 1][j + 1] + 1 {
            settle(&mut out, &mut dropped, &mut added, &names);
            out.push(a[i]);
            i += 1;
            j += 1;
        } else if j >= m || (i < n && common[i + 1][j] >= common[i][j + 1]) {
            dropped.push(a[i]);
            i += 1;
        } else {
            added.push(b[j]);
            j += 1;
        }
    }
    settle(&mut out, &mut dropped, &mut added, &names);
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_words_are_the_sources_words_the_edit_lacks() {
        let src = "a red circle bouncing on a green striped background";
        assert_eq!(dropped_words(src, "a blue circle bouncing on a green striped background"), "red");
        assert_eq!(dropped_words(src, "a blue circle bouncing on a yellow striped background"), "red green");
        assert_eq!(dropped_words(src, src), "");
        assert_eq!(dropped_words("", "a car"), "");
    }

    #[test]
    fn the_surroundings_are_the_kept_words_less_the_subjects() {
        let src = "a red circle bouncing on a green striped background";
        let edit = "a blue circle bouncing on a green striped background";
        assert_eq!(surroundings(src, edit, "blue circle"), "a bouncing on a green striped background");
        assert_eq!(surroundings("a silver jeep on a road", "a red jeep on a road", "red jeep"), "a on a road");
        assert_eq!(surroundings(src, "a blue square", "blue square"), "a a");
    }

    #[test]
    fn negative_prompts_by_name() {
        let (src, edit) = ("a red circle on a green road", "a blue circle on a green road");
        assert_eq!(negative_prompt("none", src, edit, "blue circle").unwrap(), "");
        assert_eq!(negative_prompt("source", src, edit, "blue circle").unwrap(), src);
        assert_eq!(negative_prompt("changed", src, edit, "blue circle").unwrap(), "red");
        assert_eq!(negative_prompt("surroundings", src, edit, "blue circle").unwrap(), "a on a green road");
        let err = negative_prompt("sideways", src, edit, "blue circle").unwrap_err().to_string();
        assert!(err.contains("expected none, source, changed, surroundings"), "{err}");
    }

    #[test]
    fn the_subject_prompt_takes_only_the_subjects_changes() {
        let src = "a white circle growing on a orange gradient background";
        let edit = "a pink circle growing on a red gradient background";
        assert_eq!(subject_prompt(src, edit, "pink circle"), "a pink circle growing on a orange gradient background");
        // A change of two words in a row, one naming the subject, is taken whole; a new word elsewhere is not.
        assert_eq!(
            subject_prompt("a silver jeep on a road", "a red sports car on a sandy beach", "red sports car"),
            "a red sports car on a road"
        );
        assert_eq!(subject_prompt(src, src, "white circle"), src);
        // Nothing names the subject: the source as it was.
        assert_eq!(subject_prompt(src, edit, "square"), src);
        assert_eq!(subject_prompt("", "a red car", "red car"), "a red car");
    }
}
