"""One run end to end: its configuration (`config`), the inputs it reads (`inputs`), the progress steps
(`steps`), the pipeline (`pipeline`: read data, build the model, score), the data of its report
(`summary`), the run record on disk (`record`) and the demo (`demo`)."""
