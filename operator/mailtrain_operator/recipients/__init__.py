"""A campaign's recipients: read from its source, checked, deduplicated, streamed. No kopf here.

    async with open_source(namespace, spec.recipients, settings) as stream:
        published = await Publisher(redis).publish(wire, stream)   # or: async for batch in stream.batches()
    stream.counts   # rows, recipients, invalid, duplicates, examples: final once the iteration ended

What the stream yields: `mailtrain_sender.layout.Recipient`s, in the source's order, the
address as written (surrounding spaces removed), each address once: the first row with it wins.
Addresses are compared after the sender's normalization, case-insensitively (`A@X.org`,
`a@x.ORG` and `a@x.org` are one). A list read twice gives the same recipients in the same order,
so a publish that is redone publishes the same chunks.

The counts (`Counts`), with rows == recipients + invalid + duplicates:
- `recipients`: yielded; the campaign's `status.total` counts these *and* the invalid rows.
- `invalid`: rows dropped because nobody can be sent to from them: not csv or JSON, a wrong
  number of fields, an address or name the sender would refuse (its own `check_recipient` and
  `addresses.normalize` decide), an over-long row. They are not published, so Redis never counts
  them: the caller adds `counts.invalid` to `status.invalid` and to `status.total` (the sender's
  own invalid count covers only what it finds at send time). The number is the same each time
  the same list is read, so a republish finds it again. But `Publisher.publish` does not read
  the stream at all when the campaign is already in Redis (a publish redone after it finished):
  the counts then stay 0, so keep the first publish's counts (in the status) rather than
  taking them from such a call.
- `duplicates`: valid rows whose address came before; skipped, in no status count.
- `examples`: the first few invalid rows as `Invalid(line, reason)`, for an Event ("line 17:
  An email address must have an @-sign."). Reasons quote at most a character of the row.

Errors: `SourceError(reason, message, temporary=...)` when the list as a whole cannot be used,
raised by `open_source` or by the iteration (see errors.py for the reasons). The message is one
line a person can act on; it never holds a row, a Secret's value or a URL's query. `temporary`
is True when a later try may work unchanged (a server that did not answer, 5xx, 429).
"""

from mailtrain_operator.recipients.errors import SourceError
from mailtrain_operator.recipients.rows import Invalid
from mailtrain_operator.recipients.sources import open_source
from mailtrain_operator.recipients.stream import Counts, RecipientStream

__all__ = ["Counts", "Invalid", "RecipientStream", "SourceError", "open_source"]
