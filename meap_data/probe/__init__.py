"""``meap-data probe``: does MEAP beat next-token prediction at in-context retrieval on
*your* haystack and budget?

Paired tiny decoders (one per objective: MEAP, NTP, optionally a random-token control)
train on the same haystack text with needles, the same batches and the same
initialisation per seed; then each is asked to retrieve a needle's value from a long
context, with the target placed at controlled depths among distractors. Modules:

- :mod:`.haystack`: the token stream needles are inserted into (stdlib source or a
  prepared dataset) and the probe's tokenizer.
- :mod:`.needles`: needle formats (key-value, passkey, natural phrases) and seeded
  example building.
- :mod:`.scoring`: exact-match scoring of any model on those examples (with the
  first-needle shortcut told apart from retrieval).
- :mod:`.train`: the paired training of one seed.
- :mod:`.report`: statistics across seeds, the verdict, report.json/.md and the plot.
"""
