//! What a command prints on stdout: lines for people, or with the global `--json` one JSON
//! value for scripts (the messages on stderr stay as they are).

/// Prints `value` as JSON when `json`, else runs `text`, which prints the lines for people.
pub fn emit(json: bool, value: serde_json::Value, text: impl FnOnce()) {
    if json {
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON values serialize"));
    } else {
        text();
    }
}
