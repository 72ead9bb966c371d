# checks.sh: the pass/fail bookkeeping of the shell tests, sourced by them. Prints "ok: ..." and
# "FAIL: ..." lines and the harness's closing line "N passed, N failed".
passed=0
failed=0
ok() {
    echo "ok: $*"
    passed=$((passed + 1))
}
fail() {
    echo "FAIL: $*"
    failed=$((failed + 1))
}
# Prints the closing line and exits 0 when nothing failed, 1 otherwise.
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit $?
}
