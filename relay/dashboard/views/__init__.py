"""The dashboard's views, one module per page and its actions (the route table: ``routes.py``)."""
