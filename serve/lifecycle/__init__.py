"""The model's lifecycle in the server: loading, verifying, warming and switching versions
(on an admin call or when the repository watcher sees a new one).
"""
