"""Developer tools, not packaged: a throwaway slapd, the demo, and the helpers the tests,
the benchmark and `make demo` share."""
