"""Browser tests: JupyterLab, formgrader and the feedback pages in Debian's chromium through Playwright.
Their fixtures (``browser``, ``offline_page``, ``screenshot``) are in ``tests/conftest.py``: the class
report's test (tests/autograder/test_report.py) opens its page with them too."""
