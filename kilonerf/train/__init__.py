"""Training: every setting and preset (``config``), the shared loop, one module per stage
(teacher, occupancy, distill, finetune); ``kilonerf.run.pipeline`` chains them over a run folder."""
