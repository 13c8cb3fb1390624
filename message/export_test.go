package message

// UnmarshalStd is Unmarshal by encoding/json alone, the reference the
// tests hold Unmarshal to.
var UnmarshalStd = unmarshalStd
