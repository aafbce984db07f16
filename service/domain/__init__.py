"""Pure types, no SQL, HTTP or Ray: the resolved spec (`spec`), the study and trial statuses and
their sets (`statuses`), the protocol version a result is comparable within (`ruleset`), what a claimant's write came to
(`outcomes`), which workloads and optimizers exist here, built-in or plugin (`catalog`), the typed rows of the
store's aggregate reads (`records`)."""
