"""The test suite; its folders mirror the package (tests/data for kilonerf/data, ...)."""
