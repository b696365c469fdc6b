"""Four-voice chorales (soprano, alto, tenor, bass) on a sixteenth-note grid: corpus, representation, outputs, metrics."""
