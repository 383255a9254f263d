const EMAIL = /[^\s@"'<>(),;:]+@[^\s@"'<>(),;:]+/g;
// Seven or more digits, optionally with a leading + and the usual separators: anything that may be a phone.
const PHONE = /\+?\d[\d ().-]{5,}\d/g;

/**
 * Masks what could be an email address or a phone number in a free-text error message before it is logged or
 * put in a DLQ header (SPEC 9.6). Database and validation messages should not carry values, but a constraint
 * message or a future library might.
 */
export function redactPii(message: string): string {
  return message.replace(EMAIL, "[email]").replace(PHONE, "[number]");
}
