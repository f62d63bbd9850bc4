"""Tags drawn from captions (issue 13): what the model is asked (`prompts`), how its answer becomes a list of
tags or an error (`parse`), and how tags are counted over a whole output file (`report`)."""
