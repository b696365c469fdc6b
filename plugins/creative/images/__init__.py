"""Images: the feature extractor and the metrics the image evaluator scores generated pictures with."""
