"""`medsweep report`: the offline HTML report and its figures."""
