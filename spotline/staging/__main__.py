"""`python -m spotline.staging`: serve the staging app with the configured build and port."""

if __name__ == "__main__":
    from spotline.staging.app import serve

    serve()
