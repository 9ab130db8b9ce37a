# shell=bash; sourced by the metrics tests after lib.sh.
# scrape URL OUT: GETs URL into OUT with curl (HTTP 200 required) and validates it with promtool.
scrape() {
    local url=$1 out=$2 code
    code=$(curl -sS -m 10 -o "$out" -w '%{http_code}' "$url") || fail "curl $url failed"
    assert_eq "$code" 200 "GET $url"
    promtool check metrics <"$out" >"$out.lint" 2>&1 || fail "promtool check metrics: $(cat "$out.lint")"
}

# sample FILE 'NAME{LABELS}': the value of exactly that series in a scrape, or "absent".
sample() {
    awk -v key="$2" '$1 == key { print $2; found = 1 } END { if (!found) print "absent" }' "$1"
}

# assert_sample FILE SERIES EXPECTED
assert_sample() {
    assert_eq "$(sample "$1" "$2")" "$3" "$2"
}
