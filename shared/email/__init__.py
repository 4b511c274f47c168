"""Email providers behind one protocol: Emarsys, SendGrid, a generic webhook, and a preview."""
