// Connection settings for the document store (attachments, audit trail).
module.exports = {
  url: "mongodb+srv://app:{{MONGO_PASSWORD}}@cluster0.example.net/prod",
  options: {
    retryWrites: true,
    w: "majority",
    maxPoolSize: 20,
  },
};
